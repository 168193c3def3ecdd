"""The stand-ins are as strict as the real control planes, so a leak check cannot pass by construction:
terminating an unknown (or already terminated) machine is an error in each provider's own shape, a terminated
machine is forgotten, and the fault hooks (a lost create response, failing or unconfirmed terminates) behave
as the tests that use them assume."""

from __future__ import annotations

import pytest
import requests

from standins.runpod_api import RunPodStandin
from standins.vastai_api import VastAIStandin

KEY = "standin-key-strict-0001"


def graphql(cloud, query: str):
    return requests.post(f"{cloud.url}/graphql", json={"query": query}, timeout=10,
                         headers={"Authorization": f"Bearer {KEY}"})


def deploy(cloud, name: str):
    return graphql(cloud, 'mutation { podFindAndDeployOnDemand(input: { name: "%s", imageName: "img", '
                          'gpuTypeId: "NVIDIA GeForce RTX 4090", cloudType: SECURE, gpuCount: 1, '
                          'dockerArgs: "sleep 30" }) { id } }' % name)


def terminate(cloud, pod_id: str):
    return graphql(cloud, 'mutation { podTerminate(input: { podId: "%s" }) }' % pod_id)


def test_runpod_terminate_of_an_unknown_or_terminated_pod_is_a_graphql_error(tmp_path):
    with RunPodStandin(tmp_path, api_key=KEY) as cloud:
        answer = terminate(cloud, "nosuchpod")
        assert answer.status_code == 200 and "not found" in answer.json()["errors"][0]["message"]
        pod_id = deploy(cloud, "llm-assets-x").json()["data"]["podFindAndDeployOnDemand"]["id"]
        assert "errors" not in terminate(cloud, pod_id).json()
        assert "errors" in terminate(cloud, pod_id).json()  # a second terminate: the pod no longer exists
        assert graphql(cloud, 'query { pod(input: {podId: "%s"}) { id } }' % pod_id).json()["data"]["pod"] is None
        assert graphql(cloud, "query { myself { pods { id name } } }").json()["data"]["myself"]["pods"] == []
        assert cloud.leaked() == []


def test_runpod_faults_lost_create_failing_and_unconfirmed_terminate(tmp_path):
    with RunPodStandin(tmp_path, api_key=KEY) as cloud:
        cloud.faults.lose_create_response = 1
        with pytest.raises(requests.ConnectionError):
            deploy(cloud, "llm-assets-lost")
        assert cloud.live_names() == {"llm-assets-lost": ["pod0001"]}  # made, though nobody heard of it
        listed = graphql(cloud, "query { myself { pods { id name } } }").json()["data"]["myself"]["pods"]
        assert [(p["id"], p["name"]) for p in listed] == [("pod0001", "llm-assets-lost")]
        cloud.faults.terminate_failures = 1
        failed = terminate(cloud, "pod0001")
        assert failed.status_code == 502 and cloud.leaked() == ["pod0001"]
        cloud.faults.terminate_never_confirms = True
        assert "errors" not in terminate(cloud, "pod0001").json()
        assert cloud.leaked() == ["pod0001"] and cloud.terminate_requests == ["pod0001"]


def test_vast_destroy_of_an_unknown_instance_is_404_and_the_list_forgets_destroyed_ones(tmp_path):
    headers = {"Authorization": f"Bearer {KEY}"}
    with VastAIStandin(tmp_path, api_key=KEY) as cloud:
        gone = requests.delete(f"{cloud.url}/api/v0/instances/4242/", headers=headers, timeout=10)
        assert gone.status_code == 404 and gone.json()["error"] == "no_such_instance"
        cloud.faults.lose_create_response = 1
        with pytest.raises(requests.ConnectionError):
            requests.put(f"{cloud.url}/api/v0/asks/1001/", headers=headers, timeout=10,
                         json={"image": "img", "label": "llm-assets-v", "onstart": "sleep 30", "env": {}})
        (row,) = requests.get(f"{cloud.url}/api/v0/instances/", headers=headers, timeout=10).json()["instances"]
        assert row["label"] == "llm-assets-v" and row["actual_status"] == "running"
        assert requests.delete(f"{cloud.url}/api/v0/instances/{row['id']}/", headers=headers,
                               timeout=10).json() == {"success": True}
        again = requests.delete(f"{cloud.url}/api/v0/instances/{row['id']}/", headers=headers, timeout=10)
        assert again.status_code == 404
        assert requests.get(f"{cloud.url}/api/v0/instances/", headers=headers, timeout=10).json() == {"instances": []}
        assert cloud.leaked() == []
