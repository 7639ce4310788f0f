"""patchbay.connectors"""

__all__: list[str] = []
