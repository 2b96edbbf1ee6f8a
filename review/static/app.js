// The review page. Everything that came from a key or a label reaches the DOM through
// textContent only (never innerHTML), so a key like "<img onerror=...>" stays text.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const AHEAD = 4; // photos preloaded after the current one
const REFILL_BELOW = 5; // ask for more when fewer are buffered
const OTHERS = [
  { choice: "not_a_baby_product", key: "n", text: "not a baby product" },
  { choice: "unusable_photo", key: "u", text: "unusable photo" },
];

const state = {
  buffer: [], // queue items not yet decided, oldest first; buffer[0] is on screen
  handled: new Set(), // object versions decided (or refused) in this page
  history: [], // successful decisions, newest last: {item, reviewed_at}
  labels: [], // [{label, key}]
  byKey: new Map(), // shortcut letter -> label
  fetchedAt: 0,
  urlSeconds: 300,
  chain: Promise.resolve(), // requests run one after the other, in keystroke order
  loading: null,
  retried: new Set(), // photos whose URL failed once and was re-signed
};

const $ = (id) => document.getElementById(id);
const version = (item) => JSON.stringify([item.bucket, item.key, item.etag, item.event_order]);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function notice(text, ok) {
  const node = $("notice");
  node.textContent = text;
  node.className = ok ? "ok" : "";
}

function showProgress(data) {
  if (typeof data.remaining === "number") {
    // What the table says, less what this page decided but the index may not show yet.
    $("remaining").textContent = `${data.remaining} left`;
    $("remaining").dataset.count = String(data.remaining);
  }
  $("pace").textContent =
    data.per_minute === null || data.per_minute === undefined
      ? "– / min"
      : `${data.per_minute} / min`;
  if (data.reviewer) $("reviewer").textContent = `reviewer: ${data.reviewer}`;
}

async function api(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.headers["X-CSRF-Token"] = CSRF;
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// ---------------------------------------------------------------------------------- queue ---

async function refill(force) {
  if (state.loading) return state.loading;
  const stale = Date.now() - state.fetchedAt > (state.urlSeconds - 60) * 1000;
  if (!force && !stale && state.buffer.length >= REFILL_BELOW) return undefined;
  state.loading = (async () => {
    try {
      const data = await api("GET", "/api/queue?limit=12");
      state.urlSeconds = data.url_seconds;
      state.fetchedAt = Date.now();
      setLabels(data.labels);
      const current = state.buffer[0];
      const before = current ? version(current) : null;
      const fresh = new Map(data.items.map((item) => [version(item), item]));
      // The photo on screen stays first (re-signed when the queue still has it).
      const head = current ? [fresh.get(before) || current] : [];
      const rest = data.items.filter(
        (item) => !state.handled.has(version(item)) && version(item) !== before,
      );
      state.buffer = [...head, ...rest];
      showProgress(data);
      if (!state.buffer[0] || version(state.buffer[0]) !== before) render();
      else renderPhotoOnly();
      preload();
    } catch (error) {
      notice(`Could not read the queue: ${error.message}`);
    } finally {
      state.loading = null;
    }
  })();
  return state.loading;
}

function setLabels(labels) {
  const same = JSON.stringify(labels) === JSON.stringify(state.labels);
  state.labels = labels;
  state.byKey = new Map(labels.filter((entry) => entry.key).map((entry) => [entry.key, entry.label]));
  if (!same) renderLabels();
}

function preload() {
  for (const item of state.buffer.slice(1, 1 + AHEAD)) {
    if (item.photo_url && !item.preloaded) {
      const image = new Image();
      image.src = item.photo_url;
      item.preloaded = image;
    }
  }
}

// --------------------------------------------------------------------------------- render ---

function renderLabels() {
  const list = $("labels");
  list.replaceChildren();
  for (const entry of state.labels) {
    const row = el("li");
    row.dataset.label = entry.label;
    row.append(el("kbd", entry.key || "·"), el("span", entry.label));
    row.addEventListener("click", () => choose(entry.label));
    list.append(row);
  }
  const others = $("others");
  others.replaceChildren();
  for (const other of OTHERS) {
    const row = el("li");
    row.dataset.choice = other.choice;
    row.append(el("kbd", other.key), el("span", other.text));
    row.addEventListener("click", () => choose(other.choice));
    others.append(row);
  }
}

function renderPhotoOnly() {
  const item = state.buffer[0];
  if (item && item.photo_url && $("photo").src !== item.photo_url) $("photo").src = item.photo_url;
}

function render() {
  const item = state.buffer[0];
  const photo = $("photo");
  $("empty").hidden = Boolean(item);
  $("no-photo").hidden = !item || Boolean(item.photo_url);
  photo.hidden = !item || !item.photo_url;
  $("key").textContent = item ? item.key : "";
  $("meta").textContent = item
    ? `uploaded ${item.uploaded_at || "?"} · model ${item.model_version}` +
      (item.width ? ` · ${item.width}×${item.height}` : "")
    : "";
  if (item && item.photo_url) photo.src = item.photo_url;
  else photo.removeAttribute("src");
  document.body.dataset.current = item ? item.key : "";
  const top3 = $("top3");
  top3.replaceChildren();
  for (const [index, score] of (item ? item.top3 : []).entries()) {
    const row = el("li", null, index === 0 ? "first" : "");
    row.dataset.label = score.label;
    const bar = el("span", null, "bar");
    const fill = el("span");
    fill.style.width = `${Math.round(score.score * 100)}%`;
    bar.append(fill);
    row.append(
      el("kbd", index === 0 ? `${index + 1} ⏎` : String(index + 1)),
      el("span", score.label),
      bar,
      el("span", `${(score.score * 100).toFixed(1)}%`, "score"),
    );
    row.addEventListener("click", () => choose(score.label));
    top3.append(row);
  }
}

// ------------------------------------------------------------------------------ decisions ---

function enqueue(task) {
  state.chain = state.chain.then(task).catch((error) => notice(`Error: ${error.message}`));
  return state.chain;
}

function choose(choice) {
  const item = state.buffer.shift();
  if (!item) return;
  state.handled.add(version(item));
  render();
  preload();
  enqueue(async () => {
    const result = await api("POST", "/api/decide", {
      bucket: item.bucket,
      key: item.key,
      etag: item.etag,
      event_order: item.event_order,
      choice,
    });
    showProgress(result);
    if (result.ok) {
      state.history.push({ item, reviewed_at: result.reviewed_at });
      notice(`${item.key} → ${choice.replaceAll("_", " ")}`, true);
    } else {
      notice(`The photo changed since it was shown (${item.key}); skipped it.`);
    }
    refill(false);
  });
}

function undoLast() {
  enqueue(async () => {
    const last = state.history.pop();
    if (!last) {
      notice("Nothing to undo.");
      return;
    }
    const { item } = last;
    const result = await api("POST", "/api/undo", {
      bucket: item.bucket,
      key: item.key,
      etag: item.etag,
      event_order: item.event_order,
      reviewed_at: last.reviewed_at,
    });
    showProgress(result);
    if (result.ok) {
      state.handled.delete(version(result.item));
      state.buffer = [result.item, ...state.buffer.filter((i) => version(i) !== version(result.item))];
      render();
      notice(`Undone: ${item.key} is back in the queue.`, true);
    } else {
      notice(`Cannot undo: the photo changed since (${item.key}).`);
    }
  });
}

function currentLabels() {
  const item = state.buffer[0];
  return item ? item.top3.map((score) => score.label) : [];
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  const item = state.buffer[0];
  if (key === "Backspace" || key === "z") {
    event.preventDefault();
    undoLast();
    return;
  }
  if (!item) return;
  let choice = null;
  if (key === "Enter") choice = item.category;
  else if (["1", "2", "3"].includes(key)) choice = currentLabels()[Number(key) - 1] || null;
  else if (key === "n") choice = "not_a_baby_product";
  else if (key === "u") choice = "unusable_photo";
  else if (state.byKey.has(key.toLowerCase())) choice = state.byKey.get(key.toLowerCase());
  if (choice) {
    event.preventDefault();
    choose(choice);
  }
});

$("undo").addEventListener("click", undoLast);
$("photo").addEventListener("error", () => {
  // An expired URL: read the queue again, which signs fresh URLs (once per photo).
  const item = state.buffer[0];
  if (item && !state.retried.has(version(item))) {
    state.retried.add(version(item));
    refill(true);
  } else if (item) {
    $("no-photo").hidden = false;
  }
});
renderLabels();
refill(true);
setInterval(() => refill(false), 15000);
