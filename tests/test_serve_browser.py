"""The page in headless Chromium (Selenium, Debian's ``chromium`` and ``chromium-driver``).

Chromium's fake microphone plays a WAV file into getUserMedia: a spoken command recorded by the
page gets the label ``run.py predict`` gives for the recording the page sent; Listen puts
detections on the time line; a typed sentence gets the export's translation and its attention
heat map. The server runs in a thread on a free port of 127.0.0.1. Skipped, with the reason,
where the browser is missing.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pipelines.detect import detect_file
from pipelines.serving.app import create_app
from pipelines.serving.served import find_exports, load
from tests.serve_fixtures import clips, recording, session_base, tiny_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SENTENCE = "mercredi 3 mars 2021"


def _missing() -> str | None:
    if not (CHROMIUM and DRIVER):
        return (
            "chromium and chromedriver are not installed (apt-get install -y chromium "
            "chromium-driver; .ci/run installs them where it may)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-dev.txt)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_runs(session_base(tmp_path_factory))


@pytest.fixture(scope="module")
def server(runs):
    from werkzeug.serving import make_server

    speech, text = runs
    models = {e.name: load(e) for e in find_exports([f"speech={speech}", f"text={text}"])}
    httpd = make_server("127.0.0.1", 0, create_app(models), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.port}", models
    httpd.shutdown()


def _browser(fake_audio: str | None = None):  # noqa: ANN202 - a selenium WebDriver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--use-fake-ui-for-media-stream",  # allow the microphone without asking
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(flag)
    if fake_audio:
        options.add_argument(f"--use-file-for-fake-audio-capture={fake_audio}")
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _open(driver, url: str, model: str):  # noqa: ANN001, ANN202 - the model's panel
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/#{model}")
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.body.dataset.ready")
    )
    panel = driver.find_element(By.CSS_SELECTOR, f'.panel[data-model="{model}"]')
    assert panel.is_displayed()
    return panel


def _spoken_command(speech_run: Path, model, folder: Path) -> tuple[Path, str]:  # noqa: ANN001
    """A clip of a command with faint noise around it that run.py predict gets right, surely."""
    rng = np.random.default_rng(0)
    path = folder / "spoken.wav"
    for clip in clips(speech_run):
        if clip["label"].startswith("_"):
            continue
        y = soundfile.read(clip["path"], dtype="float32")[0]
        noise = [rng.normal(0, 0.003, n).astype(np.float32) for n in (8000, 24000)]
        soundfile.write(path, np.concatenate([noise[0], y, noise[1]]), 16000)
        said = model.classify_file(str(path))  # run.py predict's answer for this file
        if said["label"] == clip["label"] and said["probability"] >= 0.8:
            return path, said["label"]
    pytest.fail("the tiny model is sure of none of its clips: train it longer in serve_fixtures")


def _player_audio(driver, panel) -> bytes:  # noqa: ANN001
    """The bytes of the recording the page posted (its player plays the same blob)."""
    import base64

    from selenium.webdriver.common.by import By

    player = panel.find_element(By.CSS_SELECTOR, ".record-view audio.player")
    encoded = driver.execute_async_script(
        """
        const [player, done] = arguments;
        fetch(player.src).then((r) => r.blob()).then((blob) => {
          const reader = new FileReader();
          reader.onload = () => done(reader.result.split(",")[1]);
          reader.readAsDataURL(blob);
        });
        """,
        player,
    )
    return base64.b64decode(encoded)


def _best_match(heard: np.ndarray, clip: np.ndarray) -> float:
    """The largest normalized correlation of ``clip`` with a span of ``heard`` (1: all of it)."""
    from scipy.signal import correlate

    padded = np.concatenate([np.zeros(clip.size), heard, np.zeros(clip.size)]).astype(np.float64)
    dots = correlate(padded, clip.astype(np.float64), mode="valid", method="fft")
    energy = np.concatenate([[0.0], np.cumsum(padded**2)])
    norms = np.sqrt(energy[clip.size :] - energy[: -clip.size]) * np.linalg.norm(clip)
    return float(np.max(dots / np.maximum(norms, 1e-12)))


def test_a_spoken_command_gets_the_label_run_py_predict_gives(server, runs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, models = server
    path, label = _spoken_command(runs[0], models["speech"], tmp_path)
    driver = _browser(f"{path}%noloop")  # played once, from when the page opens the microphone
    try:
        panel = _open(driver, url, "speech")
        panel.find_element(By.CSS_SELECTOR, "button.record").click()  # 2 s by default
        result = panel.find_element(By.CSS_SELECTOR, ".result")
        WebDriverWait(driver, 60).until(
            lambda d: result.get_attribute("data-state") in ("done", "error")
        )
        assert result.get_attribute("data-state") == "done", result.text
        # The fake microphone starts the file at a moment of its own and resamples it, so the
        # window the page sent is compared with run.py predict on exactly that recording.
        sent = tmp_path / "sent.wav"
        sent.write_bytes(_player_audio(driver, panel))
        heard, rate = soundfile.read(sent, dtype="float32")
        assert rate == models["speech"].model.rate  # the page resampled to the model's rate
        played = soundfile.read(path, dtype="float32")[0]
        match = _best_match(heard, played[8000:-24000])  # the spoken part, noise left out
        assert match > 0.8, f"the recording holds the command only in part: correlation {match}"
        said = models["speech"].classify_file(str(sent))
        shown = result.find_element(By.CSS_SELECTOR, ".answer .label").text
        assert shown == said["label"], (shown, said, label)
        bars = result.find_elements(By.CSS_SELECTOR, ".bars li")
        assert len(bars) == models["speech"].top_k
        status = panel.find_element(By.CSS_SELECTOR, ".record-view .status").text
        assert "at 16000 Hz" in status  # the page resampled to the model's rate
    finally:
        driver.quit()


@pytest.mark.parametrize("stream", [False, True], ids=["window", "stream"])
def test_listen_puts_detections_on_the_time_line(server, runs, tmp_path, stream):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, models = server
    path = tmp_path / "commands.wav"
    audio = recording(runs[0], count=4)
    soundfile.write(path, audio, 16000)
    model = models["speech"].model
    found = {
        e["label"]
        for e in detect_file(
            model, str(path), model.detector.with_overrides(threshold=0.5), stream=stream
        )
    }
    assert found, "the tiny model should find a command in its test clips"
    driver = _browser(str(path))  # looped
    try:
        panel = _open(driver, url, "speech")
        box = panel.find_element(By.CSS_SELECTOR, "input.stream")
        assert box.is_displayed()  # the export streams
        if stream:
            box.click()
        slider = panel.find_element(By.CSS_SELECTOR, "input.threshold")
        driver.execute_script(
            "arguments[0].value = '0.5'; arguments[0].dispatchEvent(new Event('input'))", slider
        )
        box.click()  # the other mode starts from its own threshold ...
        plain, own = model.detector.threshold, model.detector.stream_threshold
        assert own is not None and abs(own - plain) > 0.01 and 0.5 not in (own, plain)
        other = plain if stream else own
        assert float(slider.get_attribute("value")) == pytest.approx(other)
        box.click()  # ... and coming back keeps the one the user set
        assert float(slider.get_attribute("value")) == pytest.approx(0.5)
        assert box.is_selected() == stream
        button = panel.find_element(By.CSS_SELECTOR, "button.listen")
        button.click()
        WebDriverWait(driver, 10).until(lambda d: not box.is_enabled())  # a session keeps its mode
        time.sleep(audio.size / 16000 + 1.0)  # once through the recording
        button.click()
        WebDriverWait(driver, 30).until(lambda d: button.text == "Listen" and button.is_enabled())
        labels = [e.text for e in panel.find_elements(By.CSS_SELECTOR, ".events .event-label")]
        marks = panel.find_elements(By.CSS_SELECTOR, ".timeline .mark")
        status = panel.find_element(By.CSS_SELECTOR, ".listen-view .status").text
        assert labels and set(labels) & found, (labels, found, status)
        assert set(labels) <= {"yes", "no", "up"} and len(marks) == len(labels)
        assert "s heard" in status
        assert ("(streaming model)" in status) == stream  # what the server says it ran
    finally:
        driver.quit()


def test_a_typed_sentence_gets_its_translation_and_attention(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, models = server
    text = np.array([SENTENCE], dtype=object)
    expected = models["text"].run("serving_default", {"text": text})["translation"][0].decode()
    greedy = models["text"].run("attention", {"text": text})
    tokens = [t for t in greedy["target_tokens"][0] if t]
    driver = _browser()
    try:
        panel = _open(driver, url, "text")
        panel.find_element(By.CSS_SELECTOR, "input.sentence").send_keys(SENTENCE)
        panel.find_element(By.CSS_SELECTOR, "button.translate").click()
        WebDriverWait(driver, 30).until(
            lambda d: (
                panel.find_elements(By.CSS_SELECTOR, ".heatmap")
                or panel.find_element(By.CSS_SELECTOR, ".translation").get_attribute("data-state")
                == "error"
            )
        )
        assert panel.find_element(By.CSS_SELECTOR, ".translation").text == expected
        rows = panel.find_elements(By.CSS_SELECTOR, ".heatmap .target-token")
        assert len(rows) == len(tokens)
        columns = panel.find_elements(By.CSS_SELECTOR, ".heatmap .source-token")
        assert [c.text for c in columns] == ["mercredi", "3", "mars", "2021"]
    finally:
        driver.quit()
