"""RunPod's GraphQL API (https://api.runpod.io/graphql) as the runpod SDK calls it.

Point the SDK here with RUNPOD_API_BASE_URL=<stand-in url>. Understood: gpuTypes (price lookup and
create_pod's GPU check), podFindAndDeployOnDemand (starts dockerArgs with the pod's env), pod,
myself.pods, podStop and podTerminate. As RunPod does, a terminated pod is forgotten (`pod` answers null,
`myself.pods` leaves it out) and terminating a pod that does not exist is a GraphQL error (HTTP 200 with
`errors`, which the SDK raises as QueryError), never a quiet success.
Faults: `faults.no_capacity` answers with RunPod's "no longer any instances available" error;
`faults.preempt_when` exits the pod like a reclaimed host; `lose_create_response` deploys the pod and drops
the connection; `terminate_failures` answers podTerminate with a 502 gateway page (not JSON, as RunPod's edge
does); `terminate_never_confirms` acknowledges podTerminate and leaves the pod running.
"""

from __future__ import annotations

import re
import shlex

import sys

from standins.common import IMAGE_ENV, LOST, StandinCloud

NO_CAPACITY = ("There are no longer any instances available with the requested specifications. "
               "Please refresh and try again.")
_RUNPODCTL = """#!{python}
import json, os, sys, urllib.request
if sys.argv[1:3] != ["stop", "pod"] or len(sys.argv) != 4:
    sys.exit("runpodctl (stand-in): only 'stop pod ID'")
query = 'mutation {{ podStop(input: {{ podId: "%s" }}) {{ id desiredStatus }} }}' % sys.argv[3]
request = urllib.request.Request(os.environ["STANDIN_RUNPOD_URL"] + "/graphql", data=json.dumps({{"query": query}}).encode(),
                                 headers={{"Authorization": "Bearer " + os.environ["RUNPOD_API_KEY"],
                                          "Content-Type": "application/json"}})
urllib.request.urlopen(request).read()
"""
_STATUS = {"starting": "RUNNING", "running": "RUNNING", "exited": "EXITED", "failed": "EXITED",
           "preempted": "EXITED", "terminated": "TERMINATED"}


def parse_graphql_value(text: str, pos: int = 0):
    """A GraphQL input literal (the subset the SDK writes): string, number, bool, null, enum, list, object."""
    def skip(i):
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        return i

    def value(i):
        i = skip(i)
        ch = text[i]
        if ch == '"':
            end = text.index('"', i + 1)  # the SDK never escapes quotes inside values
            return text[i + 1:end], end + 1
        if ch == "[":
            items, i = [], skip(i + 1)
            while text[i] != "]":
                item, i = value(i)
                items.append(item)
                i = skip(i)
            return items, i + 1
        if ch == "{":
            obj, i = {}, skip(i + 1)
            while text[i] != "}":
                key = re.match(r"\w+", text[i:]).group(0)
                i = skip(i + len(key))
                assert text[i] == ":", f"expected ':' after {key} at {i}"
                obj[key], i = value(i + 1)
                i = skip(i)
            return obj, i + 1
        token = re.match(r"[-\w.]+", text[i:]).group(0)
        converted = {"true": True, "false": False, "null": None}.get(token, token)
        if isinstance(converted, str) and re.fullmatch(r"-?\d+(\.\d+)?", token):
            converted = float(token) if "." in token else int(token)
        return converted, i + len(token)

    return value(pos)


def _input_of(query: str, operation: str) -> dict:
    match = re.search(operation + r"\s*\(\s*input\s*:", query)
    if not match:
        return {}
    return parse_graphql_value(query, match.end())[0]


class RunPodStandin(StandinCloud):
    provider = "runpod"

    def __init__(self, workdir, *, api_key, price_per_hour=0.44, gpu_types=("NVIDIA GeForce RTX 4090",)):
        super().__init__(workdir, api_key=api_key, price_per_hour=price_per_hour)
        self.gpu_types = list(gpu_types)
        self.created_inputs: list[dict] = []  # the input of every podFindAndDeployOnDemand, as sent
        self.stops: list[str] = []            # pods that stopped themselves (runpodctl stop pod)
        self._pod_keys: set[str] = set()
        self._next = 0

    def route(self, method, path, query, body, headers):
        if path != "/graphql" or method != "POST":
            return 404, {"errors": [{"message": f"no route {method} {path}"}]}
        pod_key = (headers.get("Authorization") or "").removeprefix("Bearer ")
        if not self.authorized(headers, {}) and pod_key not in self._pod_keys:
            return 401, {"errors": [{"message": "Unauthorized"}]}
        text = body.get("query", "")
        if "gpuTypes" in text:
            return 200, {"data": {"gpuTypes": self._gpu_types(_input_of(text, "gpuTypes"))}}
        if "podFindAndDeployOnDemand" in text:
            return self._deploy(_input_of(text, "podFindAndDeployOnDemand"))
        if "podTerminate" in text:
            if self.faults.take("terminate_failures"):
                return 502, b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            pod_id = _input_of(text, "podTerminate")["podId"]
            if not self.terminate(pod_id):
                return 200, {"errors": [{"message": f"Pod {pod_id} not found", "path": ["podTerminate"],
                                         "extensions": {"code": "NOT_FOUND"}}], "data": {"podTerminate": None}}
            return 200, {"data": {"podTerminate": None}}
        if "podStop" in text:
            pod_id = _input_of(text, "podStop")["podId"]
            machine = self.machines.get(pod_id)
            if machine is not None and not machine.terminated:
                self.stops.append(pod_id)
                machine.status = "exited"  # before the kill, so the monitor does not call it a failure
                self._kill(machine)
            return 200, {"data": {"podStop": {"id": pod_id, "desiredStatus": "EXITED"}}}
        if re.search(r"\bpod\s*\(", text):
            return 200, {"data": {"pod": self._pod(_input_of(text, "pod")["podId"])}}
        if "myself" in text and "pods" in text:
            pods = [self._pod(i) for i in list(self.machines)]
            return 200, {"data": {"myself": {"pods": [p for p in pods if p is not None]}}}
        return 400, {"errors": [{"message": "operation not supported by the stand-in"}]}

    def _shim_dir(self):
        """`runpodctl stop pod ID` as the pod's image has it, talking to this stand-in."""
        folder = self.workdir / "runpod-bin"
        folder.mkdir(parents=True, exist_ok=True)
        shim = folder / "runpodctl"
        if not shim.exists():
            shim.write_text(_RUNPODCTL.format(python=sys.executable))
            shim.chmod(0o755)
        return folder

    def _gpu_types(self, wanted: dict) -> list[dict]:
        names = [g for g in self.gpu_types if not wanted or wanted.get("id") == g]
        return [{"id": g, "displayName": g, "memoryInGb": 24, "maxGpuCount": 8, "securePrice": self.price_per_hour,
                 "communityPrice": self.price_per_hour, "secureSpotPrice": self.price_per_hour / 2,
                 "communitySpotPrice": self.price_per_hour / 2,
                 "lowestPrice": {"minimumBidPrice": self.price_per_hour / 2,
                                 "uninterruptablePrice": self.price_per_hour}} for g in names]

    def _deploy(self, spec: dict):
        self.created_inputs.append(spec)
        if self.faults.take("no_capacity"):
            return 200, {"errors": [{"message": NO_CAPACITY}]}
        self._next += 1
        pod_id = f"pod{self._next:04d}"
        env = {item["key"]: item["value"] for item in spec.get("env") or []}
        command = spec.get("dockerArgs") or ""
        # What RunPod adds to every pod: its id and a pod-scoped key for runpodctl (here a shim on PATH).
        pod_key = f"pod-{pod_id}-scoped-key"
        self._pod_keys.add(pod_key)
        provided = {"RUNPOD_POD_ID": pod_id, "RUNPOD_API_KEY": pod_key, "RUNPOD_GPU_COUNT": str(spec.get("gpuCount") or 1),
                    "PATH": f"{self._shim_dir()}:{IMAGE_ENV['PATH']}", "STANDIN_RUNPOD_URL": self.url}
        bootstrap = ""
        if self.faults.bootstrap_failure:  # e.g. "image pull": the container never starts
            self.faults.bootstrap_failure, reason = None, self.faults.bootstrap_failure
            bootstrap = f"echo {shlex.quote('bootstrap failed: ' + reason)} >&2; exit 125"
        machine = self.launch(pod_id, command, {**env, **provided}, bootstrap=bootstrap, name=spec.get("name") or "")
        machine.price_per_hour = self.price_per_hour * int(spec.get("gpuCount") or 1)
        if self.faults.take("lose_create_response"):
            return 200, LOST
        return 200, {"data": {"podFindAndDeployOnDemand": {
            "id": pod_id, "imageName": spec.get("imageName"), "env": [f"{k}={v}" for k, v in env.items()],
            "machineId": f"m-{pod_id}", "machine": {"podHostId": f"{pod_id}-host"}}}}

    def _pod(self, pod_id: str):
        machine = self.machines.get(pod_id)
        if machine is None or machine.terminated:  # RunPod forgets a terminated pod
            return None
        status = _STATUS[machine.status]
        change = {"preempted": "Exited by RunPod: machine interrupted (spot instance reclaimed)",
                  "failed": f"Exited: {machine.status_message}", "exited": "Exited by the container",
                  "terminated": "Terminated by user"}.get(machine.status, "Rented by User")
        return {"id": pod_id, "desiredStatus": status, "costPerHr": machine.price_per_hour,
                "lastStatusChange": change, "gpuCount": 1, "imageName": "", "name": machine.name,
                "uptimeSeconds": 1 if machine.status == "running" else 0,
                # RunPod reports no runtime until the container runs on a host (still "starting" here)
                "runtime": {"ports": []} if machine.status == "running" else None,
                "machine": {"gpuDisplayName": self.gpu_types[0]}}
