// The explorer page: ask a question, follow its progress, show the answer. Every text from the corpus or the
// model is put in the page with textContent (never as HTML), so a document holding <script> shows as text.
"use strict";

const POLL_MS = 120;
const $ = (id) => document.getElementById(id);
const state = { job: null, since: 0, timer: null, current: null, pinned: null };

function show(element, visible) { element.hidden = !visible; }

function fail(message) {
  $("error").textContent = message;
  show($("error"), true);
}

async function readJson(response) {
  const body = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

async function loadInfo() {
  const info = await readJson(await fetch("/api/info"));
  $("served").textContent = `${info.model} · ${info.n_sequences} training sequences · ${info.n_layers} tracked ` +
    `layers · ranking: ${info.ranking === "index" ? "gradient index" : "exact EK-FAC scan"}`;
  for (const [name, [first, last]] of Object.entries(info.blocks)) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = `${name} (layer${first === last ? ` ${first}` : `s ${first}-${last}`})`;
    $("layers").append(option);
  }
}

function setBusy(busy) {
  $("ask-button").disabled = busy;
  $("cancel-button").disabled = !busy;
}

async function ask(question) {
  show($("error"), false);
  show($("live"), false);
  $("progress-bar").value = 0;
  $("progress-text").textContent = "sending the question";
  show($("progress"), true);
  setBusy(true);
  try {
    const job = await readJson(await fetch("/api/questions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(question),
    }));
    state.job = job.id;
    state.since = 0;
    follow(job);
  } catch (error) {
    setBusy(false);
    show($("progress"), false);
    fail(error.message);
  }
}

function follow(job) {
  for (const event of job.events) {
    if (event.kind === "stage") {
      $("progress-text").textContent = event.message;
      $("progress-bar").value = event.total ? event.done / event.total : 0;
    } else if (event.kind === "completion") {
      const live = $("live");
      live.replaceChildren(document.createTextNode($("prompt").value), span("completion", event.text));
      show(live, true);
    }
  }
  state.since = job.next_event;
  if (job.status === "queued") $("progress-text").textContent = `waiting: ${job.position} question(s) before this one`;
  if (job.status === "queued" || job.status === "running") {
    state.timer = setTimeout(poll, POLL_MS);
    return;
  }
  setBusy(false);
  show($("progress"), false);
  state.job = null;
  if (job.status === "done") render(job.answer, job.id);
  else if (job.status === "failed") fail(job.error);
  else fail("The question was cancelled.");
}

async function poll() {
  try {
    follow(await readJson(await fetch(`/api/questions/${state.job}?since=${state.since}`)));
  } catch (error) {
    setBusy(false);
    fail(error.message);
  }
}

async function cancel() {
  if (!state.job) return;
  $("progress-text").textContent = "cancelling…";
  await fetch(`/api/questions/${state.job}/cancel`, { method: "POST" });
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

function number(value) { return value === null || value === undefined ? "—" : Number(value).toPrecision(4); }

function sequenceCard(sequence) {
  const card = $("sequence-template").content.firstElementChild.cloneNode(true);
  card.dataset.row = sequence.row;
  card.querySelector(".rank").textContent = `#${sequence.rank}`;
  card.querySelector(".rid").textContent = sequence.record_id;
  card.querySelector(".score").textContent = `${sequence.score >= 0 ? "+" : ""}${number(sequence.score)} nats / N copies` +
    (sequence.exact ? "" : " (index estimate)") +
    (sequence.cosine === null || sequence.cosine === undefined ? "" : ` · cosine ${number(sequence.cosine)}`);
  card.querySelector(".blocks").textContent = Object.entries(sequence.blocks)
    .map(([name, value]) => `${name} ${number(value)}`).join(" · ");
  if (sequence.spurious) {
    card.classList.add("spurious");
    show(card.querySelector(".spurious-badge"), true);
  }
  const tokens = card.querySelector(".tokens");
  tokenPieces(tokens, sequence.tokens, sequence.text);
  const toggle = card.querySelector(".toggle");
  toggle.addEventListener("click", () => {
    const open = tokens.classList.toggle("clamped");
    toggle.textContent = open ? "open in full" : "close";
  });
  return card;
}

function tokenPieces(container, tokens, text) {
  for (const token of tokens) {
    const piece = span("", token.text);
    piece.title = `${token.value >= 0 ? "+" : ""}${number(token.value)}`;
    if (token.style) piece.style.cssText = token.style;
    container.append(piece);
  }
  if (!tokens.length) container.textContent = text;
}

// "Which neurons carry it": bars of signed shares; a click lists the sequences acting through the unit.
function neuronsPanel(body, answer) {
  const neurons = answer.neurons;
  const note = body.querySelector(".neurons-note");
  const bars = body.querySelector(".unit-bars");
  const detail = body.querySelector(".unit-detail");
  if (!neurons || !neurons.units.length) {
    note.textContent = neurons && neurons.message ? neurons.message : "No unit split for this answer.";
    return;
  }
  const largest = Math.max(...neurons.units.map((u) => Math.abs(u.share))) || 1;
  note.textContent = (neurons.concentration === null
    ? `No set of the ${neurons.n_units} units carries half of the influence (their parts cancel)`
    : `${neurons.concentration} of ${neurons.n_units} units carry half of the influence`) +
    ` of the ${answer.n_candidates} re-scored sequences that raise the answer. Orange carries it, blue works ` +
    "against it. Click a unit for the sequences that act through it.";
  neurons.units.forEach((unit) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "unit-bar";
    button.setAttribute("aria-expanded", "false");
    const bar = span(`bar ${unit.influence > 0 ? "pos" : "neg"}`, "");
    bar.style.width = `${(100 * Math.abs(unit.share) / largest).toFixed(1)}%`;
    const track = span("bar-track", "");
    track.append(bar);
    const share = `${unit.share >= 0 ? "+" : ""}${(100 * unit.share).toFixed(1)}%`;
    button.append(span("unit-name", unit.name), track, span("unit-share", share));
    button.addEventListener("click", () => {
      const open = button.getAttribute("aria-expanded") !== "true";
      bars.querySelectorAll("button").forEach((other) => other.setAttribute("aria-expanded", "false"));
      button.setAttribute("aria-expanded", open ? "true" : "false");
      detail.querySelector(".unit-title").textContent = `Re-scored sequences through ${unit.name}`;
      const list = detail.querySelector(".unit-sequences");
      list.replaceChildren(...unit.sequences.map((sequence) => {
        const item = document.createElement("li");
        item.className = "seq";
        const head = document.createElement("div");
        head.className = "seq-head";
        head.append(span("rid", sequence.record_id),
          span("score", `${sequence.value >= 0 ? "+" : ""}${number(sequence.value)} through the unit`),
          span("note", `of ${number(sequence.score)} in all`));
        const tokens = document.createElement("div");
        tokens.className = "tokens";
        tokenPieces(tokens, sequence.tokens, sequence.text);
        item.append(head, tokens);
        return item;
      }));
      show(detail, open);
    });
    const item = document.createElement("li");
    item.append(button);
    bars.append(item);
  });
}

function render(answer, jobId, target = $("current")) {
  const body = $("answer-template").content.cloneNode(true);
  body.querySelector(".prompt").textContent = answer.prompt;
  body.querySelector(".completion").textContent = answer.completion;
  body.querySelector(".logprob").textContent = `${number(answer.completion_logprob)} nats` +
    (answer.generated ? " (the model's own answer)" : "");
  body.querySelector(".layer-range").textContent = answer.layer_range;
  body.querySelector(".ranking").textContent = answer.ranking === "index"
    ? `gradient index, best ${answer.n_candidates} re-scored exactly` : `exact over ${answer.n_sequences} sequences`;
  if (answer.ranked_by === "cosine") body.querySelector(".ranking").textContent += ", by cosine";
  const total = Object.values(answer.seconds).reduce((a, b) => a + b, 0);
  body.querySelector(".seconds").textContent = `${total.toFixed(2)} s`;
  const save = body.querySelector(".save");
  save.href = `/api/questions/${jobId}/report`;
  save.download = `wherefrom-${jobId}.html`;
  const list = body.querySelector(".sequences");
  for (const sequence of answer.top) list.append(sequenceCard(sequence));
  neuronsPanel(body, answer);
  if (answer.layer_heatmap) body.querySelector(".layer-heatmap").append(heatmapFigure(answer.layer_heatmap));
  else body.querySelector(".layer-heatmap").textContent = answer.layer_message;
  const tail = answer.tail;
  body.querySelector(".tail-note").textContent = `1 - CDF of the ${tail.n_positive} positive scores of all ` +
    `${tail.n_scores} sequences (${tail.source}), log-log` +
    (tail.alpha ? `; power law alpha = ${number(tail.alpha)} above x_min = ${number(tail.x_min)}` : "") +
    (tail.top_share !== null ? `; the top 1% hold ${(100 * tail.top_share).toFixed(1)}% of the positive influence` : "") +
    (tail.message ? `. ${tail.message}` : ".");
  if (tail.x.length) body.querySelector(".tail").append(tailFigure(tail));
  const pinned = target.id === "compare";
  show(body.querySelector(".pin"), !pinned);
  show(body.querySelector(".unpin"), pinned);
  body.querySelector(".pin").addEventListener("click", () => pin(answer, jobId));
  body.querySelector(".unpin").addEventListener("click", unpin);
  target.replaceChildren(body);
  show(target, true);
  if (!pinned) state.current = { answer, jobId };
}

function pin(answer, jobId) {
  state.pinned = { answer, jobId };
  render(answer, jobId, $("compare"));
  $("results").classList.add("comparing");
  show($("current"), false);
}

function unpin() {
  state.pinned = null;
  show($("compare"), false);
  $("results").classList.remove("comparing");
}

function question(layers) {
  const completion = $("completion").value;
  return {
    prompt: $("prompt").value,
    completion: completion === "" ? null : completion,
    top_k: Number($("top-k").value) || 10,
    layers,
    normalize: $("normalize").checked,
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("ask").addEventListener("submit", (event) => {
    event.preventDefault();
    ask(question($("layers").value));
  });
  $("cancel-button").addEventListener("click", cancel);
  for (const control of ["layers", "normalize"]) {
    $(control).addEventListener("change", () => {
      // Switching layers or the ranking re-scores the shown answer (its completion kept).
      if (!state.current || state.job) return;
      const previous = state.current.answer;
      ask({ ...question($("layers").value), prompt: previous.prompt, completion: previous.completion });
    });
  }
  loadInfo().catch((error) => fail(`Cannot reach the server: ${error.message}`));
});
