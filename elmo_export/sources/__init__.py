"""Where a model comes from: one `resolve` for every form a user can name a model in.

- `official`: the official models by name (`models/catalog.json`), downloaded into the cache;
- `archives`: models served as one ZIP (NLPL's, by file or by name in `models/archives.json`);
- `bilm_tf`: `options.json` + weights `.hdf5`, as a folder or a pair of files;
- `manylangs`: ELMoForManyLangs (HIT-SCIR) model folders;
- `schema`: the catalogs' checked schema; `base`: the `Loader` every source resolves to.

`resolve` (`lookup`) turns what a user names (`elmo-export`'s MODEL, or --options/--weights) into a
`Loader`, which `exporter.export` runs once the output is checked.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Loader": "elmo_export.sources.base",
    "ModelSourceError": "elmo_export.sources.base",
    "default_model_dir": "elmo_export.sources.lookup",
    "how_to_pass": "elmo_export.sources.lookup",
    "resolve": "elmo_export.sources.lookup",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    # Imported on first use: the catalogs (`official`, `schema`) stay cheap to read, without torch.
    if name not in _PUBLIC:
        raise AttributeError(f"module 'elmo_export.sources' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
