"""Trainyard's database layer: schema (tables), migrations, and the Store gateway.

Import what you need from `db.store` (Store, records, errors); this package imports
nothing of Trainyard's other packages.
"""
