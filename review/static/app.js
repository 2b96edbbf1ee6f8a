// The review page. Everything that came from a key or a label reaches the DOM through
// textContent only (never innerHTML), so a key like "<img onerror=...>" stays text.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const AHEAD = 4; // photos preloaded after the current one
const REFILL_BELOW = 5; // ask for more when fewer are buffered
const UNUSABLE = "unusable_photo";
const OTHERS = [
  { choice: "not_a_baby_product", key: "n", text: "not a baby product" },
  { choice: UNUSABLE, key: "u", text: "unusable photo" },
];

const state = {
  buffer: [], // this console's batch not yet decided; buffer[0] is on screen
  handled: new Set(), // page ids decided (or refused) in this page
  history: [], // successful decisions, newest last: the item as shown
  labels: null, // [{label, key}]: set once, never changed in a session
  byKey: new Map(), // shortcut letter -> label
  seen: null, // id of the photo whose preview is on screen
  armed: null, // id of an unfamiliar photo whose first choice waits for a second Enter
  halted: false, // the console restarted or refused the page: nothing more is sent
  chain: Promise.resolve(), // requests run one after the other, in keystroke order
  loading: null,
};

const $ = (id) => document.getElementById(id);

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

function halt(message) {
  state.halted = true;
  document.body.dataset.halted = "1";
  notice(`${message} Reload the page to go on.`);
}

function showProgress(data) {
  if (typeof data.remaining === "number") {
    $("remaining").textContent = `${data.remaining}${data.remaining_capped ? "+" : ""} left`;
    $("remaining").dataset.count = String(data.remaining);
  }
  $("pace").textContent =
    data.per_minute === null || data.per_minute === undefined
      ? "– / min"
      : `${data.per_minute} / min`;
  if (data.reviewer) $("reviewer").textContent = `reviewer: ${data.reviewer}`;
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`;
}

function showTeam(team) {
  if (!team) return;
  const body = $("team");
  body.replaceChildren();
  for (const row of team.reviewers) {
    const line = el("tr");
    for (const cell of [
      row.reviewer,
      row.decided,
      row.per_minute === null ? "–" : row.per_minute,
      percent(row.agreement_with_model),
    ]) {
      line.append(el("td", cell));
    }
    body.append(line);
  }
  $("team-agreement").textContent =
    team.reviewer_agreement === null
      ? "no second opinions yet"
      : `reviewers agree on ${percent(team.reviewer_agreement)} of second opinions`;
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
  if (data.reload) {
    halt("This page is out of date: the console restarted or no longer holds its photos.");
  }
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// ---------------------------------------------------------------------------------- queue ---

async function refill(force) {
  if (state.loading || state.halted) return state.loading;
  if (!force && state.buffer.length >= REFILL_BELOW) return undefined;
  state.loading = (async () => {
    try {
      const data = await api("GET", "/api/queue");
      if (state.labels === null) setLabels(data.labels);
      const current = state.buffer[0];
      const known = new Set(state.buffer.map((item) => item.id));
      const fresh = data.items.filter((item) => !state.handled.has(item.id) && !known.has(item.id));
      state.buffer = [...state.buffer, ...fresh];
      showProgress(data);
      showTeam(data.team);
      if (state.buffer[0] !== current) render();
      preload();
    } catch (error) {
      if (!state.halted) notice(`Could not read the queue: ${error.message}`);
    } finally {
      state.loading = null;
    }
  })();
  return state.loading;
}

function setLabels(labels) {
  state.labels = labels;
  state.byKey = new Map(labels.filter((entry) => entry.key).map((entry) => [entry.key, entry.label]));
  renderLabels();
}

function preload() {
  for (const item of state.buffer.slice(1, 1 + AHEAD)) {
    if (!item.preloaded) {
      const image = new Image();
      image.onerror = () => {
        item.unviewable = item.unviewable || "cannot_be_shown";
      };
      image.src = item.photo;
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
    row.addEventListener("click", () => choose(entry.label, false));
    list.append(row);
  }
  const others = $("others");
  others.replaceChildren();
  for (const other of OTHERS) {
    const row = el("li");
    row.dataset.choice = other.choice;
    row.append(el("kbd", other.key), el("span", other.text));
    row.addEventListener("click", () => choose(other.choice, false));
    others.append(row);
  }
}

function render() {
  const item = state.buffer[0];
  const photo = $("photo");
  state.seen = null;
  state.armed = null;
  $("empty").hidden = Boolean(item);
  $("no-photo").hidden = true;
  photo.hidden = !item;
  photo.classList.remove("zoomed");
  $("key").textContent = item ? item.key : "";
  $("meta").textContent = item
    ? `uploaded ${item.uploaded_at || "?"} · model ${item.model_version}` +
      (item.width ? ` · ${item.width}×${item.height}` : "")
    : "";
  const reason = $("reason");
  reason.textContent = item ? `Here because: ${item.reason_text}` : "";
  reason.className = item && item.deliberate ? "reason warn" : "reason";
  $("second").hidden = !(item && item.second_opinion);
  if (item) photo.src = item.photo;
  else photo.removeAttribute("src");
  document.body.dataset.current = item ? item.key : "";
  document.body.dataset.seen = "";
  const top3 = $("top3");
  top3.replaceChildren();
  for (const [index, score] of (item ? item.top3 : []).entries()) {
    const row = el("li", null, index === 0 ? "first" : "");
    if (!score.known) row.classList.add("unknown");
    row.dataset.label = score.label;
    const bar = el("span", null, "bar");
    const fill = el("span");
    fill.style.width = `${Math.round(score.score * 100)}%`;
    bar.append(fill);
    const hint = index === 0 ? (item.deliberate ? "1 ⏎⏎" : "1 ⏎") : String(index + 1);
    row.append(
      el("kbd", score.known ? hint : "–"),
      el("span", score.known ? score.label : `${score.label} (not a model label)`),
      bar,
      el("span", `${(score.score * 100).toFixed(1)}%`, "score"),
    );
    if (score.known) row.addEventListener("click", () => choose(score.label, false));
    top3.append(row);
  }
}

function photoShown() {
  const item = state.buffer[0];
  if (!item) return;
  state.seen = item.id;
  document.body.dataset.seen = item.id;
}

function photoFailed() {
  const item = state.buffer[0];
  if (!item) return;
  item.unviewable = item.unviewable || "cannot_be_shown";
  $("photo").hidden = true;
  $("no-photo").hidden = false;
  $("no-photo").textContent =
    "This photo cannot be shown, so it cannot be given a category: " +
    "press u if it is unusable (or skip it by reloading later).";
}

// ------------------------------------------------------------------------------ decisions ---

function enqueue(task) {
  state.chain = state.chain.then(task).catch((error) => {
    if (!state.halted) notice(`Error: ${error.message}`);
  });
  return state.chain;
}

function choose(choice, deliberate) {
  const item = state.buffer[0];
  if (!item || state.halted) return;
  // Nothing is decided on a photo the page has not shown, except calling it unusable.
  if (state.seen !== item.id && !(choice === UNUSABLE && item.unviewable)) {
    notice("Wait for the photo to be on screen.");
    return;
  }
  if (item.deliberate && choice === item.category && !deliberate) {
    state.armed = item.id;
    $("reason").textContent =
      `Here because: ${item.reason_text}. Press Enter again to confirm ${choice}, or choose another.`;
    return;
  }
  state.buffer.shift();
  state.handled.add(item.id);
  render();
  preload();
  enqueue(async () => {
    if (state.halted) return;
    const result = await api("POST", "/api/decide", { id: item.id, choice, deliberate });
    showProgress(result);
    if (result.ok) {
      state.history.push(item);
      notice(`${item.key} → ${choice.replaceAll("_", " ")}`, true);
    } else {
      notice(`The photo changed since it was shown (${item.key}); skipped it.`);
    }
    refill(false);
  });
}

function undoLast() {
  if (state.halted) return;
  enqueue(async () => {
    const item = state.history.pop();
    if (!item) {
      notice("Nothing to undo.");
      return;
    }
    const result = await api("POST", "/api/undo", { id: item.id });
    showProgress(result);
    if (result.ok) {
      state.handled.delete(item.id);
      state.buffer = [result.item, ...state.buffer.filter((i) => i.id !== item.id)];
      render();
      notice(`Undone: ${item.key} is back, as it was.`, true);
    } else {
      notice(`Cannot undo: the photo changed since (${item.key}).`);
    }
  });
}

function pressed(event) {
  // The physical digit keys whatever Shift says, and letters whatever Shift or Caps Lock say.
  const digit = /^(Digit|Numpad)([1-3])$/.exec(event.code || "");
  if (digit) return digit[2];
  return event.key.length === 1 ? event.key.toLowerCase() : event.key;
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || state.halted) return;
  const key = pressed(event);
  const handles = ["Enter", "Backspace", "1", "2", "3", "+", "="].includes(key) || key.length === 1;
  if (handles) event.preventDefault();
  // A held key repeats: only its first press counts, so it never decides a photo nobody saw.
  if (event.repeat) return;
  const item = state.buffer[0];
  if (key === "Backspace" || key === "z") {
    undoLast();
    return;
  }
  if (key === "+" || key === "=") {
    $("photo").classList.toggle("zoomed");
    return;
  }
  if (!item) return;
  const known = item.top3.filter((score) => score.known).map((score) => score.label);
  let choice = null;
  let deliberate = false;
  if (key === "Enter") {
    choice = known.includes(item.category) ? item.category : null;
    deliberate = state.armed === item.id;
  } else if (["1", "2", "3"].includes(key)) {
    const score = item.top3[Number(key) - 1];
    choice = score && score.known ? score.label : null;
  } else if (key === "n") choice = "not_a_baby_product";
  else if (key === "u") choice = UNUSABLE;
  else if (state.byKey.has(key)) choice = state.byKey.get(key);
  if (key !== "Enter") state.armed = null;
  if (choice) choose(choice, deliberate);
});

$("undo").addEventListener("click", undoLast);
$("photo").addEventListener("load", photoShown);
$("photo").addEventListener("error", photoFailed);
$("photo").addEventListener("click", () => $("photo").classList.toggle("zoomed"));
refill(true);
setInterval(() => refill(false), 15000);
