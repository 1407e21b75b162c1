"""OpenSIPS loads this file (modparam("python", "script_name", ".../pyscripts/opensips_entry.py")).

The python module puts this folder first on sys.path, imports this file and
calls mod_init() once, in the main process before fork; the object it returns
answers python_exec("on_request") and the other routes in every worker.
A settings error raises here, so OpenSIPS refuses to start and logs why,
instead of routing with a profile nobody meant.
"""

import locale

from OpenSIPS import LM_ERR  # type: ignore[attr-defined,unused-ignore]

from gateway.host import Router
from gateway.settings import load


def mod_init() -> Router:
    router = Router(load(), LM_ERR)
    # Py_Initialize set the C library's LC_CTYPE from the environment (LANG=C.UTF-8 and the
    # like); OpenSIPS runs in "C".  In a multibyte locale glibc's regex, which the cfg's =~
    # uses, takes its wide-character path (twice the instructions for the scanner test on
    # every request) and ranges and case follow UTF-8.  The workers fork after this.
    locale.setlocale(locale.LC_CTYPE, "C")
    return router
