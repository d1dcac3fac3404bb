from __future__ import annotations

from tests.fixtures.factories import PIXEL_7, Tenant, create_test_case, upload_app


def test_upload_and_run_end_to_end(tenant: Tenant) -> None:
    uploaded = upload_app(tenant)
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["file"]["id"]
    case = create_test_case(tenant)
    queued = tenant.client.post(
        "/v1/test-cases/run", json={"jobs": [{"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7}]}
    )
    assert queued.status_code == 200, queued.text
    run_id = queued.json()["jobs"][0]["id"]
    status = tenant.client.get(f"/v1/jobs/status/{run_id}")
    assert status.status_code == 200
    assert status.json()["status"] == "queued"
    assert status.json()["app"]["name"] == "MyApp v1.0.0"
