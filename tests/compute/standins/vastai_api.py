"""Vast.ai's REST API (https://console.vast.ai/api/v0) as the vastai CLI/SDK and our client call it.

Understood: POST /bundles/ (offer search: the query dict of `vastai search offers`), PUT /asks/{id}/
(rent an offer: image, env, onstart), GET /instances/ (`show instances`: {"instances": [...]}),
GET /instances/{id}/, DELETE /instances/{id}/. A destroyed instance is gone: it leaves the list, reads as
null, and destroying it again (or any unknown id) answers 404 no_such_instance. Faults: `no_capacity` makes
the rent answer "no_such_ask" (the offer was taken), `bootstrap_failure` ("image_pull") leaves the next
instance's container never started (actual_status "exited", Docker's error in status_msg), `preempt_when` takes
the machine away (an outbid interruptible instance), `lose_create_response` rents and drops the connection,
`terminate_failures` answers DELETE with HTTP 500, `terminate_never_confirms` answers success and keeps it.
"""

from __future__ import annotations

import re
import shlex
import time

from standins.common import LOST, StandinCloud


def _matches(value, condition: dict) -> bool:
    for op, target in condition.items():
        if op == "eq" and value != target:
            return False
        if op == "neq" and value == target:
            return False
        if op in ("gt", "gte", "lt", "lte") and value is None:
            return False
        if (op == "gt" and not value > target) or (op == "gte" and not value >= target):
            return False
        if (op == "lt" and not value < target) or (op == "lte" and not value <= target):
            return False
        if op == "in" and value not in target:
            return False
        if op == "notin" and value in target:
            return False
    return True


def _container_command(body: dict) -> str:
    """runtype "args": onstart is the entrypoint, args its arguments; otherwise onstart is a script."""
    if body.get("runtype") == "args":
        return shlex.join([body.get("onstart") or "bash", *(body.get("args") or [])])
    return body.get("onstart") or ""


class VastAIStandin(StandinCloud):
    provider = "vastai"

    def __init__(self, workdir, *, api_key, offers=None):
        super().__init__(workdir, api_key=api_key)
        self.offers = offers if offers is not None else [
            {"id": 1001, "machine_id": 501, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.42,
             "reliability2": 0.995, "verified": True, "rentable": True, "rented": False, "external": False},
            {"id": 1002, "machine_id": 502, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.35,
             "reliability2": 0.91, "verified": True, "rentable": True, "rented": False, "external": False},
            {"id": 1003, "machine_id": 503, "gpu_name": "RTX 3090", "num_gpus": 1, "dph_total": 0.20,
             "reliability2": 0.999, "verified": True, "rentable": True, "rented": False, "external": False},
            {"id": 1004, "machine_id": 504, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.48,
             "reliability2": 0.99, "verified": True, "rentable": True, "rented": False, "external": False},
        ]
        self.searches: list[dict] = []
        self.rents: list[dict] = []     # (offer id, request body) of every rent, as sent
        self._next = 7000
        self._info: dict[str, dict] = {}

    def route(self, method, path, query, body, headers):
        if not self.authorized(headers, query):
            return 401, {"success": False, "error": "auth_error", "msg": "Invalid user key"}
        if method == "POST" and path == "/api/v0/bundles/":
            return 200, {"offers": self._search(body)}
        rent = re.fullmatch(r"/api/v0/asks/(\d+)/", path)
        if method == "PUT" and rent:
            return self._rent(int(rent.group(1)), body)
        if method == "GET" and path in ("/api/v0/instances/", "/api/v0/instances"):
            rows = [self._instance(i) for i in list(self.machines)]
            return 200, {"instances": [r for r in rows if r is not None]}
        inst = re.fullmatch(r"/api/v0/instances/(\d+)/", path)
        if inst and method == "GET":
            return 200, {"instances": self._instance(inst.group(1))}
        if inst and method == "DELETE":
            if self.faults.take("terminate_failures"):
                return 500, {"success": False, "error": "server_error", "msg": "Internal error, please retry"}
            if not self.terminate(inst.group(1)):
                return 404, {"success": False, "error": "no_such_instance",
                             "msg": f"Instance {inst.group(1)} not found."}
            return 200, {"success": True}
        return 404, {"success": False, "error": "not_found", "msg": f"no route {method} {path}"}

    def _search(self, query: dict) -> list[dict]:
        self.searches.append(query)
        conditions = {k: v for k, v in query.items() if isinstance(v, dict)}
        rows = [o for o in self.offers if all(_matches(o.get(k), c) for k, c in conditions.items())]
        for field, direction in reversed(query.get("order") or []):
            rows.sort(key=lambda o: o.get(field) or 0, reverse=direction == "desc")
        return rows[: int(query.get("limit") or len(rows))]

    def _rent(self, offer_id: int, body: dict):
        self.rents.append({"offer": offer_id, **body})
        offer = next((o for o in self.offers if o["id"] == offer_id), None)
        if offer is None or offer["rented"] or self.faults.take("no_capacity"):
            return 400, {"success": False, "error": "no_such_ask",
                         "msg": f"Instance type {offer_id} is no longer available."}
        self._next += 1
        instance_id = str(self._next)
        info = {"machine_id": offer["machine_id"], "dph_total": offer["dph_total"], "label": body.get("label"),
                "image": body.get("image"), "num_gpus": offer["num_gpus"], "gpu_name": offer["gpu_name"]}
        self._info[instance_id] = info
        failure = self.faults.bootstrap_failure
        if failure:
            self.faults.bootstrap_failure = None
            # Docker never starts the container: no process, an error in status_msg.
            self.machines_placeholder(instance_id, body, f"Error response from daemon: {failure}: "
                                                     "pull access denied or manifest unknown")
        else:
            machine = self.launch(instance_id, _container_command(body), dict(body.get("env") or {}),
                                  name=body.get("label") or "")
            machine.price_per_hour = offer["dph_total"]
        if self.faults.take("lose_create_response"):
            return 200, LOST
        return 200, {"success": True, "new_contract": int(instance_id)}

    def machines_placeholder(self, instance_id: str, body: dict, message: str) -> None:
        from standins.common import Machine

        workdir = self.workdir / self.provider / instance_id
        workdir.mkdir(parents=True, exist_ok=True)
        machine = Machine(instance_id, _container_command(body), dict(body.get("env") or {}), workdir,
                          offer_price := self._info[instance_id]["dph_total"], name=body.get("label") or "")
        machine.price_per_hour = offer_price
        machine.status, machine.status_message = "never_started", message
        with self._lock:
            self.machines[instance_id] = machine
            self.launches.append({"id": instance_id, "command": machine.command, "env": machine.env})

    def _instance(self, instance_id: str):
        machine = self.machines.get(instance_id)
        if machine is None or machine.terminated:
            return None
        actual = {"running": "running", "starting": "loading", "exited": "exited", "failed": "exited",
                  "preempted": "offline", "never_started": "exited"}[machine.status]
        return {"id": int(instance_id), **self._info[instance_id], "actual_status": actual,
                "intended_status": "running", "cur_state": actual,
                "status_msg": machine.status_message or "success, running",
                "start_date": machine.created_at, "extra_env": [[k, v] for k, v in machine.env.items()],
                "duration": time.time() - machine.created_at}
