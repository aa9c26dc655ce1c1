"""The shapes shared by every floor: records (dataclasses), the run table's schema, label vocabularies."""
