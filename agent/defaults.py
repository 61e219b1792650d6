"""Defaults shared by the command line and the code behind it — one home for each.
No imports: the CLI reads them at start-up, which must stay instant."""

MAX_BATCH = 8  # largest batch an engine accepts (dynamic batch axis 1..N)
ONNX_OPSET = 17
ENGINE_FORMATS = ("torchscript", "onnx")  # what build-engines builds unless told
# agent repo's dynamic batching: the max queue delay and the preferred batch sizes (those up to
# each engine's max batch); agent tune's default configuration and its "ladder" are the same
QUEUE_DELAY_US = 100
PREFERRED_BATCH_SIZES = (4, 8, 16, 32)
# The Triton release the agent serves with: NGC image tag, and the release of the tritonserver
# bundled in nvidia-pytriton 0.7 (Triton 2.51). Ansible's pin lives in group_vars/all/stack.yml.
TRITON_RELEASE = "24.10"
