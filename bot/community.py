"""The community Linli serves: its name and its buildings, loaded from data/community.yml."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_COMMUNITY_PATH = Path(__file__).resolve().parent.parent / "data" / "community.yml"


class CommunityError(ValueError):
    """The community file is malformed; the message names the bad entry."""


@dataclass(frozen=True)
class Building:
    number: str
    units: int
    floors: int


@dataclass(frozen=True)
class Community:
    name: str
    hotline: str
    buildings: tuple[Building, ...]

    def building(self, number: str | None) -> Building | None:
        """Return the building with this number, or None if the community has none."""
        return next((b for b in self.buildings if b.number == str(number)), None)

    @property
    def max_building(self) -> int:
        return max(int(b.number) for b in self.buildings)


def load_community(path: str | Path = DEFAULT_COMMUNITY_PATH) -> Community:
    """Load and validate the community description."""
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    where = str(path)
    try:
        name = str(raw["name"])
        hotline = str(raw.get("hotline", ""))
        entries = raw["buildings"]
    except (KeyError, TypeError) as exc:
        raise CommunityError(f"{where}: needs 'name' and a 'buildings' list") from exc
    buildings: list[Building] = []
    for index, entry in enumerate(entries):
        try:
            building = Building(
                number=str(int(entry["number"])),
                units=int(entry["units"]),
                floors=int(entry["floors"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CommunityError(
                f"{where}: buildings[{index}] needs whole numbers number, units and floors, "
                f"got {entry!r}"
            ) from exc
        if building.units < 1 or building.floors < 1:
            raise CommunityError(f"{where}: buildings[{index}] needs at least 1 unit and 1 floor")
        buildings.append(building)
    numbers = [b.number for b in buildings]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise CommunityError(f"{where}: building numbers listed twice: {', '.join(duplicates)}")
    if not buildings:
        raise CommunityError(f"{where}: list at least one building")
    return Community(name=name, hotline=hotline, buildings=tuple(buildings))
