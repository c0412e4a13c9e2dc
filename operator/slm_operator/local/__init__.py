"""Single host: the same SLMDeployment served on this machine without Kubernetes.

- `slmctl up -f model.yaml`   (run.up): validate and size as the operator does, quantize with
  the real quantizer, start the real engine on 127.0.0.1, behind the same API key check.
- `slmctl status` / `slmctl down` (run.status / run.down).
- `slmctl compose -f model.yaml [--webui]` (compose.build): a Compose file for one host.

State lives under one folder per deployment (state.StateDir): $SLM_HOME/<name>/, default
~/.local/share/slm-operator/<name>/.
"""
