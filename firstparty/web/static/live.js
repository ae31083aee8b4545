// The live debugger (/admin/live): rows for new events, delivery cells updated in place.
// Pause holds new events back (counted, not shown) until Resume adds them.
// Text only (textContent, never HTML): event names, answers and warnings come from outside.
"use strict";
(function () {
  const body = document.querySelector("#live tbody");
  const state = document.querySelector("#live-state");
  const pause = document.querySelector("#live-pause");
  const held = document.querySelector("#live-held");
  if (!body || !window.EventSource) return;
  let paused = false;
  let waiting = [];  // updates received while paused, in order

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function addEvent(event) {
    if (document.getElementById("ev-" + event.id)) return;
    const row = document.createElement("tr");
    row.id = "ev-" + event.id;
    cell(row, event.received_at.slice(11, 19), "mono");
    const name = cell(row, "");
    const link = document.createElement("a");
    link.href = "/admin/events/" + encodeURIComponent(event.id);
    link.textContent = event.name + (event.bot ? " (bot: " + event.bot + ")" : "");
    name.appendChild(link);
    cell(row, event.source);
    cell(row, event.visitor_id || event.user_id || "", "mono");
    cell(row, event.warnings.map((w) => w.field + ": " + w.message).join("; "), "warn");
    const deliveries = cell(row, "");
    deliveries.className = "deliveries";
    body.insertBefore(row, body.firstChild);
  }

  function showDelivery(delivery) {
    const row = document.getElementById("ev-" + delivery.event);
    if (!row) return;
    const holder = row.querySelector(".deliveries");
    let line = document.getElementById("dl-" + delivery.id);
    if (!line) {
      line = document.createElement("div");
      line.id = "dl-" + delivery.id;
      holder.appendChild(line);
    }
    const answer = delivery.error || (delivery.answer_status ? delivery.answer_status + " " + (delivery.answer || "") : "");
    line.className = "status-" + delivery.status;
    line.textContent = delivery.destination + ": " + delivery.status +
      (delivery.attempts ? " (try " + delivery.attempts + ")" : "") + (answer ? " — " + answer : "");
  }

  function apply(update) {
    update.events.forEach(addEvent);
    update.deliveries.forEach(showDelivery);
  }

  function showHeld() {
    const count = waiting.reduce((n, update) => n + update.events.length, 0);
    held.textContent = paused ? count + " new event" + (count === 1 ? "" : "s") + " — Resume to show" : "";
  }

  if (pause && held) {
    pause.hidden = false;
    pause.addEventListener("click", function () {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
      if (!paused) {
        const updates = waiting;
        waiting = [];
        updates.forEach(apply);
      }
      showHeld();
    });
  }

  // The page's own filters (?source=&name=&type=) narrow the stream too.
  const source = new EventSource("/admin/live/stream" + window.location.search);
  source.addEventListener("open", function () { state.textContent = "● following new events"; });
  source.addEventListener("error", function () { state.textContent = "reconnecting…"; });
  source.addEventListener("update", function (message) {
    const update = JSON.parse(message.data);
    if (paused) {
      waiting.push(update);
      showHeld();
    } else {
      apply(update);
    }
  });
})();
