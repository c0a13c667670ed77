"""install-cni for pycalico: put the frozen plugins and the CNI config on a node.

Lives under ``packaging/`` but is imported as the top-level ``calico_install``
(``packaging/install_cni.py`` puts its directory on ``sys.path``; the frozen
bundle has it built in). It is deliberately not ``packaging.*``: that name
belongs to the PyPI ``packaging`` distribution which pip and setuptools import.
Stdlib only, so it runs from the bundle or from any Python 3.11.
"""
