"""patchbay.secrets"""

__all__: list[str] = []
