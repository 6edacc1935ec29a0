"""Pure dispatch logic: catalogue, routing rules and SLAs (no I/O beyond loading data)."""

from __future__ import annotations

from routing.catalogue import (
    Catalogue,
    CatalogueError,
    Category,
    Department,
    Sla,
    UnknownCategory,
    UnknownDepartment,
    default_catalogue,
    load_catalogue,
    parse_catalogue,
)

__all__ = [
    "Catalogue",
    "CatalogueError",
    "Category",
    "Department",
    "Sla",
    "UnknownCategory",
    "UnknownDepartment",
    "default_catalogue",
    "load_catalogue",
    "parse_catalogue",
]
