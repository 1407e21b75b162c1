"""OpenSIPS loads this file (modparam("python", "script_name", ".../pyscripts/opensips_entry.py")).

The python module puts this folder first on sys.path, imports this file and
calls mod_init() once, in the main process before fork; the object it returns
answers python_exec("on_request") and the other routes in every worker.  The
rules (opensips/gateway.ini and pyscripts/policy.py) are loaded here: a mistake
raises, so OpenSIPS refuses to start and logs why, instead of routing with rules
nobody meant.  Once running, each worker loads them again when they change
(gateway/loader.py), and a file with a mistake is refused while the old rules route.
"""

import locale

from OpenSIPS import LM_ERR  # type: ignore[attr-defined,unused-ignore]

from gateway.host import Router


def mod_init() -> Router:
    try:
        router = Router.from_files(LM_ERR)
    except Exception as exc:
        # OpenSIPS prints the traceback only to stderr (and then "can't get traceback"): say it in its log too.
        LM_ERR(f"gateway: the rules cannot route, OpenSIPS stops: {type(exc).__name__}: {exc}\n")
        raise
    # Py_Initialize set the C library's LC_CTYPE from the environment (LANG=C.UTF-8 and the
    # like); OpenSIPS runs in "C".  In a multibyte locale glibc's regex, which the cfg's =~
    # uses, takes its wide-character path (twice the instructions for the scanner test on
    # every request) and ranges and case follow UTF-8.  The workers fork after this.
    locale.setlocale(locale.LC_CTYPE, "C")
    return router
