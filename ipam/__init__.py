"""Calico IPAM: block allocation with host affinity over the datastore.

Modules: ``values`` (the stored IPAM objects as light classes: the pydantic
models' JSON without importing pydantic), ``blocks`` (pure block logic),
``store`` (typed CAS access to blocks, affinities, handles), ``handles`` (reference counts), ``claim`` (block
affinity protocol), ``pools`` (pool selection), ``config`` (IPAM settings),
``allocator`` (auto-assign / specific IP), ``release``, ``checker``
(consistency report), ``gc`` (CNI GC), ``lock`` (host lock), ``retry``,
``errors``, ``plugin`` (CNI verbs) and ``main`` (the ``calico-ipam`` entry
point). Importing this package imports nothing else.
"""
