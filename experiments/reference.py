"""The paper's published numbers (experiments/reference/*.json) and what our runs differ in from the settings
they were made with."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from experiments.aggregate import Group
from experiments.errors import ResultsError
from experiments.table_records import Record

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
REFERENCES = {"tcpt": "tcpt_readme.json"}


@dataclass
class Reference:
    name: str
    doc: dict

    @classmethod
    def load(cls, name: str) -> "Reference":
        if name not in REFERENCES:
            raise ResultsError(f"unknown reference {name!r}; known: {', '.join(REFERENCES)}")
        path = REFERENCE_DIR / REFERENCES[name]
        try:
            return cls(name, json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise ResultsError(f"{path}: cannot read the reference numbers ({e})") from None

    def applies(self, g: Group) -> bool:
        p = self.doc["protocol"]
        return g.kind == p["kind"] and g.backbone == p["backbone"] and g.shots in (p["shots"], None)

    def row(self, trainer: str, variant: str, sub: str, metric: str) -> dict | None:
        for r in self.doc["rows"]:
            if (r["trainer"].lower(), r["variant"], r["subsample"], r["metric"]) == (trainer.lower(), variant,
                                                                                     sub, metric):
                return r
        return None

    def settings_of(self, trainer: str) -> list[dict]:
        """The settings the paper's rows of ``trainer`` were made with (``settings`` in the reference file)."""
        return [st for st in self.doc.get("settings", []) if st["trainer"] in ("*", trainer)]

    def differences(self, trainer: str, records: Iterable[Record]) -> list[tuple[dict, str]]:
        """(setting, what our runs have) for each setting of the paper's ``trainer`` rows that ``records`` do not
        all share; a run that does not record its settings counts as different."""
        records = list(records)
        out = []
        for st in self.settings_of(trainer):
            ours = set()
            for r in records:
                method = json.loads(r.method_cfg) if r.method_cfg else None
                for key, want in st.get("method", {}).items():
                    have = "not recorded" if method is None else method.get(key, "not recorded")
                    if have != want:
                        ours.add(f"{key} {have}")
                if "precision" in st and r.precision and r.precision != st["precision"]:
                    ours.add(f"PREC {r.precision}")
            if ours:
                out.append((st, ", ".join(sorted(ours))))
        return out

    def value(self, row: dict, dataset: str) -> float | None:
        try:
            return row["values"][self.doc["datasets"].index(dataset)]
        except ValueError:
            return None


