"""Declared parameters of the script functions the fake host offers.

Copied by hand from the ``cmd_export_t`` tables of OpenSIPS 3.6.8 and 4.0.1
(core_cmds.c, modules/{registrar,nathelper,dialog,rr,tm,sl,signaling,
sipmsgops,topology_hiding,rtpengine,uac}); the two versions agree for these.
``python_msgobj.c`` walks every declared parameter: one of integer or
variable type that the caller left out (not even None) makes it call strlen on
a "not given" marker and the worker dies.  The fake raises ``HostCrash`` then.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Dict, Tuple


class Kind(enum.Enum):
    STR = "str"
    INT = "int"
    VAR = "var"
    REGEX = "regex"


@dataclass(frozen=True)
class Param:
    kind: Kind
    optional: bool = False


# S: string, N: integer (number), V: variable; a trailing _ marks an optional parameter.
S, N, V = Param(Kind.STR), Param(Kind.INT), Param(Kind.VAR)
S_, N_, V_ = Param(Kind.STR, True), Param(Kind.INT, True), Param(Kind.VAR, True)

SIGNATURES: Dict[str, Tuple[Param, ...]] = {
    # core
    "setflag": (S,),
    "resetflag": (S,),
    "isflagset": (S,),
    "setbflag": (S, N_),
    "resetbflag": (S, N_),
    "isbflagset": (S, N_),
    "force_rport": (),
    "force_tcp_alias": (N_,),
    # python, maxfwd
    "python_exec": (S, S_),
    "mf_process_maxfwd_header": (N,),
    # sipmsgops
    "has_totag": (),
    "is_method": (S,),
    "has_body": (S_,),
    "append_hf": (S, S_),
    "remove_hf": (S,),
    "remove_hf_re": (Param(Kind.REGEX),),
    # nathelper
    "nat_uac_test": (S,),
    "fix_nated_contact": (S_,),
    "fix_nated_register": (),
    "add_rcv_param": (N_,),
    # registrar
    "save": (S, S_, S_, S_),
    "lookup": (S, S_, S_),
    "is_registered": (S, S_),
    "remove_ip_port": (S, N, S, S_),
    # dialog
    "create_dialog": (S_,),
    "match_dialog": (S_,),
    "set_dlg_flag": (S,),
    "is_dlg_flag_set": (S,),
    # rr
    "record_route": (S_,),
    "loose_route": (),
    "is_direction": (S,),
    # topology_hiding
    "topology_hiding": (S_, S_),
    "topology_hiding_match": (S_,),
    # tm
    "t_relay": (S_, S_),
    "t_check_trans": (),
    "t_newtran": (),
    "t_reply": (N, S),
    "t_on_branch": (S,),
    "t_on_reply": (S,),
    "t_on_failure": (S,),
    "t_was_cancelled": (),
    "t_local_replied": (S,),
    # sl / signaling
    "sl_send_reply": (N, S),
    "sl_reply_error": (),
    "send_reply": (N, S),
    # auth, auth_db
    "www_authorize": (S, S),
    "proxy_authorize": (S, S),
    "www_challenge": (S, S_, S_),
    "proxy_challenge": (S, S_, S_),
    "consume_credentials": (),
    # uac (its uac_auth(), with uac_auth's credentials)
    "uac_auth": (S_,),
    "db_is_to_authorized": (S,),
    "db_is_from_authorized": (S,),
    # statistics, pike
    "update_stat": (S, N),
    "pike_check_req": (),
    # rtpengine
    "rtpengine_offer": (S_, V_, V_, S_),
    "rtpengine_answer": (S_, V_, V_, S_),
    "rtpengine_delete": (S_, V_),
    "rtpengine_manage": (S_, V_, V_, S_),
    "rtpengine_play_dtmf": (S, S_, V_),
}

#: Core statements that look like functions in the script but are keywords of its grammar (cfg.y):
#: the script has them, call_function does not find them.
STATEMENTS: Dict[str, Tuple[Param, ...]] = {
    "xlog": (S, S_),
}
