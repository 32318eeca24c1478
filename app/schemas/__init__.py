"""marshmallow schemas, one per provider payload (webhooks use unknown=EXCLUDE)."""
