"""Where a package comes from: a path, the shipped default, a catalog name or the Hugging Face Hub.

`resolve.resolve_package` is the way in; `catalog` reads the package catalogs, `download` is the
resumable, sha256-checked transfer and its cache, `hub` the Hub client. Nothing here is imported
by `import elmo_runtime`: `Elmo` imports it when it is given a name instead of a folder.
"""
