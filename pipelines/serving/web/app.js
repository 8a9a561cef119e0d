"use strict";
// The page: one tab per served model.
// Speech: record (the microphone at the model's rate, sent as WAV) or pick a file, and see the
// top labels; listen (audio sent every half second, detections on a time line).
// Translation: translate, and the attention of the greedy decode as a heat map.
// Each model's card: labels, the run's summary (data, test figures) and its plots.

const MARK = "\u2581"; // the tokenizer's glue marker; hidden when tokens are shown
const LISTEN_EVERY_MS = 500;
const TIMELINE_SECONDS = 20;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const percent = (p) => `${(100 * p).toFixed(1)} %`;
const showToken = (token) => token.replaceAll(MARK, "") || "·";

async function call(url, options) {
  const response = await fetch(url, options);
  let body;
  try {
    body = await response.json();
  } catch {
    body = { error: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function predict(model, body) {
  return call(`/v1/models/${model}:predict`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

// ---------------------------------------------------------------- audio

class Microphone {
  // The microphone through an AudioWorklet. The context runs at `rate` when the browser can
  // resample a live stream into it (Chrome can); otherwise at the device's rate.
  static async open(rate, onSamples) {
    if (!navigator.mediaDevices || !window.AudioWorkletNode) {
      throw new Error(
        "the microphone needs getUserMedia and AudioWorklet, which browsers give only to " +
          "pages on http://127.0.0.1, http://localhost or https",
      );
    }
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    let context;
    let source;
    try {
      context = new AudioContext({ sampleRate: rate });
      source = context.createMediaStreamSource(stream);
    } catch {
      if (context) context.close();
      context = new AudioContext();
      source = context.createMediaStreamSource(stream);
    }
    await context.audioWorklet.addModule("/static/recorder.js");
    const node = new AudioWorkletNode(context, "recorder");
    const mute = context.createGain(); // keeps the graph pulling without playing anything
    mute.gain.value = 0;
    source.connect(node);
    node.connect(mute);
    mute.connect(context.destination);
    if (context.state === "suspended") await context.resume();
    const mic = new Microphone();
    Object.assign(mic, { stream, context, node, flushed: null });
    node.port.onmessage = (event) => {
      if (event.data === "flushed") mic.flushed?.();
      else onSamples(event.data);
    };
    return mic;
  }

  get rate() {
    return this.context.sampleRate;
  }

  async close() {
    await new Promise((resolve) => {
      this.flushed = resolve; // the worklet's last partial block arrives first
      this.node.port.postMessage("flush");
      setTimeout(resolve, 500);
    });
    this.stream.getTracks().forEach((track) => track.stop());
    await this.context.close();
  }
}

function concat(blocks) {
  const out = new Float32Array(blocks.reduce((n, b) => n + b.length, 0));
  let offset = 0;
  for (const block of blocks) {
    out.set(block, offset);
    offset += block.length;
  }
  return out;
}

async function resample(samples, from, to) {
  if (from === to || samples.length === 0) return samples;
  const length = Math.max(1, Math.round((samples.length * to) / from));
  const offline = new OfflineAudioContext(1, length, to);
  const buffer = offline.createBuffer(1, samples.length, from);
  buffer.copyToChannel(samples, 0);
  const source = offline.createBufferSource();
  source.buffer = buffer;
  source.connect(offline.destination);
  source.start();
  return (await offline.startRendering()).getChannelData(0);
}

function encodeWav(samples, rate) {
  // 16-bit PCM mono: every audio reader takes it.
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => view.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, x)) * 0x7fff, true));
  return new Blob([buffer], { type: "audio/wav" });
}

// ---------------------------------------------------------------- speech

function showAnswer(box, answer) {
  const where =
    answer.start === undefined
      ? null
      : answer.start === null
        ? el("p", { class: "where", text: "no command found: the most confident window's answer" })
        : el("p", { class: "where", text: `heard at ${answer.start.toFixed(2)}–${answer.end.toFixed(2)} s` });
  box.replaceChildren(
    el(
      "div",
      { class: "answer" },
      el("span", { class: "label", text: answer.label }),
      el("span", { class: "probability", text: percent(answer.probability) }),
    ),
    where,
    el(
      "ol",
      { class: "bars" },
      ...answer.top_k.map((t) =>
        el(
          "li",
          {},
          el("span", { class: "bar-label", text: t.label }),
          el("span", { class: "bar" }, el("span", { class: "fill", style: `width: ${100 * t.probability}%` })),
          el("span", { class: "bar-value", text: percent(t.probability) }),
        ),
      ),
    ),
  );
  box.dataset.state = "done";
}

function showError(box, err) {
  box.replaceChildren(el("p", { class: "error", text: String(err.message || err) }));
  box.dataset.state = "error";
}

async function classify(model, blob, filename, box, player) {
  box.dataset.state = "busy";
  box.replaceChildren(el("p", { class: "status", text: "Classifying…" }));
  if (player) player.src = URL.createObjectURL(blob);
  const form = new FormData();
  form.append("file", blob, filename);
  try {
    showAnswer(box, await call(`/v1/models/${model.name}:classify_audio`, { method: "POST", body: form }));
  } catch (err) {
    showError(box, err);
  }
}

function recordView(model) {
  const box = el("div", { class: "result", "data-state": "empty" });
  const player = el("audio", { controls: "", class: "player" });
  const seconds = el(
    "select",
    { class: "seconds", "aria-label": "recording length" },
    ...[1, 1.5, 2, 3, 5].map((s) => el("option", { value: String(s), text: `${s} s` })),
  );
  seconds.value = "2";
  const status = el("span", { class: "status" });
  let stop = null;
  const record = el("button", {
    class: "record primary",
    text: "● Record",
    onclick: async () => {
      if (stop) return stop();
      const blocks = [];
      let mic;
      try {
        mic = await Microphone.open(model.sample_rate, (b) => blocks.push(b));
      } catch (err) {
        return showError(box, err);
      }
      record.textContent = "■ Stop";
      record.classList.add("active");
      const ended = new Promise((resolve) => {
        stop = resolve;
        setTimeout(resolve, 1000 * Number(seconds.value));
      });
      const started = performance.now();
      const tick = setInterval(() => {
        status.textContent = `recording ${((performance.now() - started) / 1000).toFixed(1)} s`;
      }, 100);
      await ended;
      clearInterval(tick);
      stop = null;
      record.textContent = "● Record";
      record.classList.remove("active");
      await mic.close();
      const samples = await resample(concat(blocks), mic.rate, model.sample_rate);
      status.textContent = `${(samples.length / model.sample_rate).toFixed(2)} s at ${model.sample_rate} Hz`;
      await classify(model, encodeWav(samples, model.sample_rate), "recording.wav", box, player);
    },
  });
  const file = el("input", {
    type: "file",
    accept: "audio/*,.wav,.flac,.ogg,.mp3",
    class: "file",
    onchange: () => {
      const chosen = file.files[0];
      if (chosen) classify(model, chosen, chosen.name, box, player);
    },
  });
  return el(
    "section",
    { class: "view record-view" },
    el("h2", { text: "Say a command" }),
    el(
      "p",
      { class: "hint" },
      `Record, then say one of: ${model.labels.filter((l) => !l.startsWith("_")).join(", ")}. ` +
        `The page records at ${model.sample_rate} Hz and sends a WAV; a file can be any format and rate.`,
    ),
    el("div", { class: "controls" }, record, seconds, status),
    el("label", { class: "file-label" }, "or a file: ", file),
    player,
    box,
  );
}

function listenView(model) {
  const start = model.detector ? model.detector.threshold : 0.7; // the export's own setting
  // the streaming model's own threshold, when the export has one
  const own = model.detector && model.detector.stream_threshold != null ? model.detector.stream_threshold : start;
  const threshold = el("input", { type: "range", min: String(Math.min(0.3, start, own)), max: String(Math.max(0.95, start, own)), step: "0.01", value: String(start), class: "threshold" });
  const thresholdValue = el("span", { class: "threshold-value", text: Number(threshold.value).toFixed(2) });
  // the streaming model (stream_step), when the export has one, starts from its own threshold;
  // each mode keeps the value the user last set for it
  const streamBox = el("input", { type: "checkbox", class: "stream" });
  const chosen = { plain: start, stream: own };
  const mode = () => (streamBox.checked ? "stream" : "plain");
  threshold.addEventListener("input", () => {
    thresholdValue.textContent = Number(threshold.value).toFixed(2);
    chosen[mode()] = Number(threshold.value);
  });
  streamBox.addEventListener("change", () => {
    threshold.value = String(chosen[mode()]);
    thresholdValue.textContent = Number(threshold.value).toFixed(2);
  });
  const streamLabel = el("label", { title: "run the streaming model, as run.py detect --stream" }, streamBox, " streaming model");
  if (model.stream !== true) streamLabel.hidden = true;
  const meter = el("p", { class: "meter", text: "–" });
  const timeline = el("div", { class: "timeline", "aria-label": "detections over time" });
  const list = el("ol", { class: "events" });
  const status = el("span", { class: "status" });
  const events = [];
  let heard = 0;
  let listening = false;

  function draw() {
    const end = Math.max(TIMELINE_SECONDS, heard);
    const start = end - TIMELINE_SECONDS;
    const x = (t) => `${(100 * (t - start)) / TIMELINE_SECONDS}%`;
    const ticks = [];
    for (let t = Math.ceil(start / 2) * 2; t <= end; t += 2) {
      ticks.push(el("span", { class: "tick", style: `left: ${x(t)}`, text: `${t} s` }));
    }
    const marks = events
      .filter((e) => e.end >= start)
      .map((e) =>
        el(
          "span",
          {
            class: "mark",
            style: `left: ${x(Math.max(e.start, start))}; width: calc(${x(e.end)} - ${x(Math.max(e.start, start))})`,
            title: `${e.label} ${e.start.toFixed(2)}–${e.end.toFixed(2)} s (${e.score.toFixed(2)})`,
          },
          el("span", { class: "mark-label", text: e.label }),
        ),
      );
    timeline.replaceChildren(...ticks, ...marks, el("span", { class: "now", style: `left: ${x(heard)}` }));
  }

  function take(answer) {
    heard = answer.seconds;
    for (const e of answer.events) {
      events.push(e);
      list.prepend(
        el(
          "li",
          { class: "event" },
          el("span", { class: "event-label", text: e.label }),
          ` ${e.start.toFixed(2)}–${e.end.toFixed(2)} s, score ${e.score.toFixed(2)}`,
        ),
      );
    }
    if (answer.latest) {
      meter.textContent = `now: ${answer.latest.label} ${percent(answer.latest.probability)}`;
    }
    status.textContent =
      `${heard.toFixed(1)} s heard, ${events.length} detection${events.length === 1 ? "" : "s"}` +
      (answer.stream ? " (streaming model)" : "");
    draw();
  }

  const button = el("button", {
    class: "listen primary",
    text: "Listen",
    onclick: async () => {
      if (listening) {
        listening = false;
        button.disabled = true;
        return;
      }
      let pending = [];
      let mic;
      try {
        mic = await Microphone.open(model.sample_rate, (b) => pending.push(b));
      } catch (err) {
        status.textContent = String(err.message || err);
        return;
      }
      events.length = 0;
      heard = 0;
      list.replaceChildren();
      draw();
      listening = true;
      // a session keeps the mode and threshold it started with (the server refuses others)
      streamBox.disabled = true;
      threshold.disabled = true;
      const sessionThreshold = threshold.value;
      button.textContent = "Stop";
      button.classList.add("active");
      const session = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
      const url = (end) =>
        `/v1/models/${model.name}:listen?session=${session}&threshold=${sessionThreshold}` +
        (streamBox.checked ? "&stream=true" : "") +
        (end ? "&end=true" : "");
      try {
        for (;;) {
          await sleep(LISTEN_EVERY_MS);
          const ending = !listening;
          if (ending) await mic.close();
          const samples = concat(pending);
          pending = [];
          const body = samples.length ? encodeWav(samples, mic.rate) : undefined;
          take(await call(url(ending), { method: "POST", body }));
          if (ending) break;
        }
      } catch (err) {
        status.textContent = String(err.message || err);
        listening = false;
        mic.close().catch(() => {});
      }
      button.disabled = false;
      streamBox.disabled = false;
      threshold.disabled = false;
      button.textContent = "Listen";
      button.classList.remove("active");
    },
  });
  draw();
  return el(
    "section",
    { class: "view listen-view" },
    el("h2", { text: "Listen" }),
    el(
      "p",
      { class: "hint" },
      `The microphone streams to the server every ${LISTEN_EVERY_MS} ms; it slides the model over the ` +
        "audio as run.py detect does (or runs the streaming model, as detect --stream does) and " +
        "reports each command as it is found.",
    ),
    el("div", { class: "controls" }, button, el("label", {}, "threshold ", threshold, " ", thresholdValue), streamLabel, status),
    meter,
    timeline,
    list,
  );
}

// ---------------------------------------------------------------- translation

function heatmap(attention) {
  const source = attention.source_tokens.filter((t) => t !== "");
  const target = attention.target_tokens.filter((t) => t !== "");
  const grid = el("div", {
    class: "heatmap",
    style: `grid-template-columns: max-content repeat(${source.length}, minmax(2.4rem, 3.2rem))`,
  });
  grid.append(el("span", { class: "corner", text: "" }));
  source.forEach((t) => grid.append(el("span", { class: "source-token", text: showToken(t) })));
  target.forEach((t, row) => {
    grid.append(el("span", { class: "target-token", text: showToken(t) }));
    source.forEach((s, col) => {
      const w = attention.weights[row][col];
      grid.append(
        el("span", {
          class: "cell",
          style: `background: rgba(29, 78, 216, ${w.toFixed(3)}); color: ${w > 0.5 ? "#fff" : "#1e293b"}`,
          title: `${showToken(t)} ← ${showToken(s)}: ${w.toFixed(3)}`,
          text: w >= 0.1 ? w.toFixed(1) : "",
        }),
      );
    });
  });
  return grid;
}

function translateView(model) {
  const input = el("input", { type: "text", class: "sentence", placeholder: "Type a sentence", "aria-label": "sentence" });
  const output = el("p", { class: "translation", "data-state": "empty" });
  const attention = el("div", { class: "attention" });
  async function translate() {
    const text = input.value;
    output.dataset.state = "busy";
    output.textContent = "Translating…";
    try {
      const answer = await predict(model.name, { instances: [text] });
      output.textContent = answer.predictions[0] || "(nothing to translate)";
      output.dataset.state = "done";
      if (!model.attention) {
        attention.replaceChildren(
          el("p", { class: "hint", text: "This export has no attention signature: export it again (python run.py export RUN_DIR)." }),
        );
        return;
      }
      const greedy = (await predict(model.name, { signature_name: "attention", instances: [text] })).predictions[0];
      attention.replaceChildren(
        el("h3", { text: "Attention of the greedy decode" }),
        el(
          "p",
          { class: "hint" },
          `Each row is an output token, each column a source token; darker = more attention. ` +
            (greedy.translation === answer.predictions[0]
              ? "Greedy decoding gives the same translation."
              : `Greedy decoding gives “${greedy.translation}” (the translation above is beam search, width ${model.beam_width}).`),
        ),
        heatmap(greedy),
      );
    } catch (err) {
      output.textContent = String(err.message || err);
      output.dataset.state = "error";
    }
  }
  input.addEventListener("keydown", (e) => e.key === "Enter" && translate());
  const examples = (model.examples || []).map((s) =>
    el("button", { class: "example", text: s, onclick: () => ((input.value = s), translate()) }),
  );
  return el(
    "section",
    { class: "view translate-view" },
    el("h2", { text: "Translate" }),
    el("div", { class: "controls" }, input, el("button", { class: "translate primary", text: "Translate", onclick: translate })),
    examples.length ? el("p", { class: "examples" }, "Try: ", ...examples) : null,
    output,
    attention,
  );
}

// ---------------------------------------------------------------- cards and tabs

function card(model) {
  return el(
    "aside",
    { class: "card" },
    el("h2", { text: "About this model" }),
    el("p", { class: "path" }, el("code", { text: model.path })),
    model.labels
      ? el("ul", { class: "labels", "aria-label": "labels" }, ...model.labels.map((l) => el("li", { text: l })))
      : null,
    el(
      "table",
      { class: "summary" },
      el("tbody", {}, ...model.summary.map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: v })))),
    ),
    model.plots.length
      ? el(
          "div",
          { class: "plots" },
          ...model.plots.map((url) =>
            el("a", { href: url, target: "_blank" }, el("img", { src: url, alt: url.split("/").pop() })),
          ),
        )
      : null,
  );
}

function panel(model) {
  const views =
    model.task === "speech_commands" ? [recordView(model), listenView(model)] : [translateView(model)];
  return el(
    "div",
    { class: "panel", id: `model-${model.name}`, "data-model": model.name, "data-task": model.task, hidden: "" },
    el("div", { class: "tools" }, ...views),
    card(model),
  );
}

function select(name) {
  document.querySelectorAll(".panel").forEach((p) => (p.hidden = p.dataset.model !== name));
  document.querySelectorAll("#tabs button").forEach((b) => b.setAttribute("aria-selected", String(b.dataset.model === name)));
}

async function main() {
  const main = document.getElementById("panels");
  try {
    const { models } = await call("/api/models");
    const tabs = document.getElementById("tabs");
    for (const model of models) {
      const kind = model.task === "speech_commands" ? "speech" : "translation";
      tabs.append(
        el(
          "button",
          { "data-model": model.name, onclick: () => (location.hash = model.name) },
          model.name,
          el("small", { text: kind }),
        ),
      );
      main.append(panel(model));
    }
    document.getElementById("loading").remove();
    const pick = () => {
      const wanted = decodeURIComponent(location.hash.slice(1));
      select(models.some((m) => m.name === wanted) ? wanted : models[0]?.name);
    };
    window.addEventListener("hashchange", pick);
    pick();
    document.body.dataset.ready = "true";
  } catch (err) {
    document.getElementById("loading").textContent = `Cannot load the models: ${err.message || err}`;
  }
}

main();
