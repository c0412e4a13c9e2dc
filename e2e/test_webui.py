"""Open WebUI in a real browser against `slmctl up`'s endpoint.

Open WebUI comes from PyPI (open-webui, pinned), installed into its own virtualenv cached
outside the repository, keyed by version (~/.cache/slm-operator/venv-open-webui-<version>):
several GB, about half an hour on 2 cores, so the install starts in the background when this
module is collected (before the first test of the session runs) and the test waits for it.
Chromium and its WebDriver are Debian's (hack/host-deps.sh), driven by selenium (pinned).

The test serves the tiny Qwen3 model with `slmctl up` (ONNX Runtime, the API key), starts Open
WebUI pointed at it (OPENAI_API_BASE_URL, OPENAI_API_KEY; sign-in off, offline), opens the page
in headless Chromium, sends a prompt, waits for the model's reply in the page, checks the engine
answered it (its request log), and saves a screenshot (path printed; $SLM_TEST_ARTIFACTS or
/tmp/slm-test-artifacts).

One setting is made through Open WebUI's API first: its built-in tools are switched off for
this model. Open WebUI 0.12 sends them with every chat (function calling "native"), and the
ONNX server refuses `tool_choice: auto` for a chat template without tool-call blocks, which the
tiny model's template is (a real Qwen3 template has them).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

WEBUI_VERSION = "0.12.4"
CACHE = Path.home() / ".cache" / "slm-operator"
VENV = CACHE / f"venv-open-webui-{WEBUI_VERSION}"
STAMP = VENV / ".slm-installed"
INSTALL_LOG = CACHE / "logs" / f"open-webui-{WEBUI_VERSION}-install.log"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL_WAIT_S = 3600  # a cold install on 2 busy cores took about 30 min
START_WAIT_S = 900  # its first start migrates a database and imports a lot (minutes on 2 busy cores)
REPO = "slm-e2e/tiny-qwen3"
PROMPT = "The baker opened"


def start_install() -> None:
    """Install Open WebUI into VENV in the background unless it is there (or being installed).

    A lock file keeps a second session from installing too; STAMP marks a finished install."""
    if STAMP.exists() or shutil.which("python3") is None:
        return
    INSTALL_LOG.parent.mkdir(parents=True, exist_ok=True)
    script = (f'exec 9>"{CACHE}/.open-webui-install.lock"; flock -n 9 || exit 0; '
              f'test -f "{STAMP}" && exit 0; rm -rf "{VENV}"; '
              f'nice -n 10 python3 -m venv "{VENV}" && '
              f'nice -n 10 "{VENV}/bin/pip" install -q --disable-pip-version-check open-webui=={WEBUI_VERSION} && '
              f'touch "{STAMP}"')
    with open(INSTALL_LOG, "ab") as log:
        subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)


# At collection: the install runs while the other tests do.
if os.environ.get("SLM_WEBUI_INSTALL", "1") == "1" and not STAMP.exists():
    start_install()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_install() -> None:
    if not STAMP.exists() and os.environ.get("SLM_WEBUI_INSTALL", "1") != "1":
        pytest.skip(f"Open WebUI {WEBUI_VERSION} is not installed in {VENV} and SLM_WEBUI_INSTALL=0 "
                    "turned the install off")
    deadline = time.monotonic() + INSTALL_WAIT_S
    while not STAMP.exists():
        if time.monotonic() > deadline:
            tail = INSTALL_LOG.read_text(errors="replace")[-3000:] if INSTALL_LOG.exists() else "(no log)"
            pytest.fail(f"Open WebUI {WEBUI_VERSION} is not installed after {INSTALL_WAIT_S} s; log "
                        f"{INSTALL_LOG}:\n{tail}", pytrace=False)
        locked = subprocess.run(["flock", "-n", str(CACHE / ".open-webui-install.lock"), "true"],
                                check=False).returncode != 0
        if not locked and not STAMP.exists():  # no installer runs, and none finished: it failed
            tail = INSTALL_LOG.read_text(errors="replace")[-3000:] if INSTALL_LOG.exists() else "(no log)"
            pytest.fail(f"pip install open-webui=={WEBUI_VERSION} failed; log {INSTALL_LOG}:\n{tail}", pytrace=False)
        time.sleep(5)


@pytest.fixture(scope="module")
def browser_ready() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"no {', '.join(missing)}: bash hack/host-deps.sh installs Debian's chromium and chromium-driver")
    pytest.importorskip("selenium", reason="selenium is pinned in the dev extra (make venv)")
    import importlib.util

    for mod in ("torch", "onnxruntime_genai", "slm_quantizer", "slm_onnx_server"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"needs {mod} (make venv installs the quantize and serve extras)")


@pytest.fixture(scope="module")
def served(browser_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The tiny model behind `slmctl up`, and Open WebUI pointed at it: {url, webui, record, log}."""
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from e2e.hubserver import HubServer
    from slm_operator.local import run
    from slm_runtime.tiny_models import tiny_model

    tmp = tmp_path_factory.mktemp("webui")
    old_home = os.environ.get("SLM_HOME")
    os.environ["SLM_HOME"] = str(tmp / "slm-home")
    port, webui_port = free_port(), free_port()
    steps = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))
    webui: subprocess.Popen | None = None
    with HubServer(host="127.0.0.1", port=0) as hub:
        sha = hub.add_repo(REPO, tiny_model("qwen3", train_steps=steps))
        manifest = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "webui-tiny"},
                    "spec": {"model": {"source": f"hf://{REPO}", "revision": sha, "hub": {"endpoint": hub.url},
                                       "contextLength": 512},
                             "quantization": {"format": "onnx", "type": "int4"}, "engine": {"name": "onnxruntime"},
                             "resources": {"cpu": "1", "memory": "2Gi"}}}
        try:
            record = run.up(manifest, port=port, say=lambda s: print(s) if "shown once" not in s else None)
            wait_install()
            key = Path(record["apiKeyFile"]).read_text().strip()
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "DATA_DIR": str(tmp / "webui"),
                   "OPENAI_API_BASE_URL": record["url"], "OPENAI_API_KEY": key, "ENABLE_OLLAMA_API": "False",
                   "WEBUI_AUTH": "False", "WEBUI_SECRET_KEY": secrets.token_urlsafe(32), "OFFLINE_MODE": "True",
                   "HF_HUB_OFFLINE": "1", "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "False",
                   "ENABLE_VERSION_UPDATE_CHECK": "False", "ENABLE_TITLE_GENERATION": "False",
                   "ENABLE_FOLLOW_UP_GENERATION": "False", "ENABLE_TAGS_GENERATION": "False",
                   "ENABLE_AUTOCOMPLETE_GENERATION": "False"}
            (tmp / "webui").mkdir()
            log = tmp / "open-webui.log"
            with open(log, "wb") as fh:
                webui = subprocess.Popen([str(VENV / "bin" / "open-webui"), "serve", "--host", "127.0.0.1",
                                          "--port", str(webui_port)], env=env, cwd=tmp, stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            url = f"http://127.0.0.1:{webui_port}"
            deadline = time.monotonic() + START_WAIT_S
            while run.http_status(url + "/api/config", timeout=5) != 200:
                if webui.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Open WebUI did not start (exit {webui.poll()}); last lines of {log}:\n"
                                f"{log.read_text(errors='replace')[-3000:]}", pytrace=False)
                time.sleep(2)
            yield {"url": url, "record": record, "log": log}
        finally:
            if webui is not None and webui.poll() is None:
                os.killpg(webui.pid, 15)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    webui.wait(timeout=30)
                if webui.poll() is None:
                    os.killpg(webui.pid, 9)
            run.down("webui-tiny")
            if old_home is None:
                os.environ.pop("SLM_HOME", None)
            else:
                os.environ["SLM_HOME"] = old_home


def _api(url: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    import json
    import urllib.request

    req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


@pytest.mark.timeout(INSTALL_WAIT_S + START_WAIT_S + 900)
def test_open_webui_chat_in_chromium(served: dict[str, Any]) -> None:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, rec = served["url"], served["record"]
    # Sign-in is off: the sign-in call returns the single admin user's token.
    token = _api(url, "/api/v1/auths/signin", {"email": "", "password": ""})["token"]
    models = [m["id"] for m in _api(url, "/api/models", token=token)["data"]]
    assert rec["model"] in models, models  # Open WebUI listed the endpoint's models with the key
    # A short answer: the tiny model rambles on to its context length otherwise.
    _api(url, "/api/v1/models/create", {"id": rec["model"], "name": rec["model"], "params": {"max_tokens": 48},
                                        "meta": {"capabilities": {"builtin_tools": False}}}, token=token)

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # Debian's driver: no download
    engine_log = Path(rec["processes"][0]["log"])
    answered_before = engine_log.read_text(errors="replace").count('"/v1/chat/completions", "status": 200')
    shot = Path(os.environ.get("SLM_TEST_ARTIFACTS", "/tmp/slm-test-artifacts")) / "open-webui-chat.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(f"{url}/?model={rec['model']}")
        wait = WebDriverWait(driver, 120, poll_frequency=0.5)
        box = wait.until(lambda d: d.find_element(By.ID, "chat-input"))
        # The release notes dialog opens on a first visit; close it.
        for button in driver.find_elements(By.XPATH, "//button[contains(., \"Okay, Let's Go!\")]"):
            button.click()
        box.click()
        box.send_keys(PROMPT)
        box.send_keys(Keys.ENTER)

        seen: list[str] = []

        def reply(d: Any) -> str | None:
            """The last reply's text once it stopped changing for a second (the stream ended)."""
            els = d.find_elements(By.ID, "response-content-container")
            text = els[-1].text.strip() if els else ""
            seen.append(text)
            return text if text and len(seen) > 2 and seen[-3] == text else None

        text = WebDriverWait(driver, 300, poll_frequency=0.5,
                             ignored_exceptions=(StaleElementReferenceException,)).until(reply)
        driver.save_screenshot(str(shot))
        page = driver.find_element(By.ID, "messages-container").text
    finally:
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(shot))
        driver.quit()
    print(f"\nOpen WebUI screenshot: {shot}\nreply: {text[:200]!r}")
    assert PROMPT in page
    assert rec["model"] in page  # the reply is labelled with the served model
    low = text.lower()
    assert not any(s in low for s in ("error", "tool_choice", "unauthorized", "invalid api key")), text
    answered = engine_log.read_text(errors="replace").count('"/v1/chat/completions", "status": 200')
    assert answered > answered_before, "the ONNX server logged no answered chat completion"
    assert shot.stat().st_size > 10_000
