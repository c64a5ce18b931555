"""The one compiled part: the fast tfvars reader (orchestrator/hcl/_literal.c).

Optional: without a C compiler the build goes on and tfo reads every file with its Python readers
(the same results, slower on thousands of files). Everything else is declared in pyproject.toml.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("orchestrator.hcl._literal", ["orchestrator/hcl/_literal.c"], optional=True)])
