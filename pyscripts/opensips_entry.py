"""OpenSIPS loads this file (modparam("python", "script_name", ".../pyscripts/opensips_entry.py")).

The python module puts this folder first on sys.path, imports this file and
calls mod_init() once, in the main process before fork; the object it returns
answers python_exec("on_request") and the other routes in every worker.
A settings error raises here, so OpenSIPS refuses to start and logs why,
instead of routing with a profile nobody meant.
"""

from OpenSIPS import LM_ERR  # type: ignore[attr-defined,unused-ignore]

from gateway.host import Router
from gateway.settings import load


def mod_init() -> Router:
    return Router(load(), LM_ERR)
