"""The store's exception types; str() of each is the one line to show."""


class StoreError(Exception):
    """The store cannot do what was asked; str() is the line to show."""


class DuplicateError(StoreError):
    """A record with the same identity exists already."""


class SchemaError(StoreError):
    """The database file is not one this version can use."""
