"""Data and pretrained weights by name (`lungsrad fetch NAME`): the registry of names and their
sources, download with resume, verification against pins and the lock file, layout, and the
`fetch:NAME` references configs use. Submodules import lazily; this package imports nothing."""
