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

from elmo_export.lazy import lazy_attributes

_PUBLIC = {
    "elmo_export.sources.base": ("Loader", "ModelSourceError"),
    "elmo_export.sources.lookup": ("default_model_dir", "how_to_pass", "resolve"),
}
__all__ = sorted(name for names in _PUBLIC.values() for name in names)

# Imported on first use: the catalogs (`official`, `schema`) stay cheap to read, without torch.
__getattr__ = lazy_attributes(__name__, _PUBLIC)
