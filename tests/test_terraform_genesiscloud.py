"""Genesis Cloud: validate and `terraform test` (mock_provider) need the
genesiscloud/genesiscloud provider binary for its schema. They run where the
provider can be installed (registry access or a mirror holding it) and skip,
with the reason printed, where it cannot (these build machines)."""

from __future__ import annotations

import pytest

from tf_support import copy_terraform

pytestmark = pytest.mark.terraform


@pytest.fixture
def initialised(tmp_path):
    from agent.errors import AgentError
    from agent.infra.terraform import Terraform

    tree = copy_terraform(tmp_path / "terraform")
    tf = Terraform(tree / "modules" / "genesiscloud-gpu-nodes", tmp_path / "work")
    try:
        tf.init(backend=False)
    except AgentError as e:
        reason = f"genesiscloud/genesiscloud provider cannot be installed here: {e}"
        print(reason)
        pytest.skip(reason)
    return tf


def test_module_validate_and_terraform_test(initialised):
    assert initialised.validate()["valid"]
    rc, out = initialised.test()
    print(out)
    assert rc == 0, out
    assert "4 passed, 0 failed" in out
