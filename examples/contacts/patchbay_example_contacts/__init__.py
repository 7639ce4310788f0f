"""An example patchbay connector plugin: contacts from a sample REST API.

``ContactsConnector`` is registered in the ``patchbay.connectors`` entry-point group as
``contacts``; :mod:`patchbay_example_contacts.fake_api` is a fake of the API to run it
against.
"""

from .connector import ContactsConfig, ContactsConnector

__all__ = ["ContactsConfig", "ContactsConnector"]
