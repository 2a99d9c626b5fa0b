"""Training the project's default model: the WordNet gloss corpus (`corpus`) and the biLM trainer (`train`).

Not part of the export path: it writes a model in the official layout (`options.json` +
`weights.hdf5`), which `elmo-export` then reads like any other. Needs the `export` extra (torch).
"""
