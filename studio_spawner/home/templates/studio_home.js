// The studio home's actions: Start, Stop and Delete through the hub's REST API (the hub
// checks the signed-in user's scopes), and deadlines in the browser's local time.
(function () {
  "use strict";
  var data = window.jhdata || {};
  var base = data.base_url || "/hub/";

  function serverUrl(owner, server) {
    return base + "api/users/" + encodeURIComponent(owner) + "/servers/" +
      encodeURIComponent(server);
  }

  function showError(text) {
    var alert = document.getElementById("studio-alert");
    if (alert) {
      alert.textContent = text;
      alert.classList.remove("d-none");
      alert.scrollIntoView({ block: "nearest" });
    }
  }

  function call(method, owner, server, body) {
    return fetch(serverUrl(owner, server), {
      method: method,
      credentials: "same-origin",
      headers: { "X-XSRFToken": data.xsrf_token || "", "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    }).then(function (response) {
      if (response.ok) { return response; }
      return response.json().catch(function () { return {}; }).then(function (json) {
        throw new Error(json.message || response.status + " " + response.statusText);
      });
    });
  }

  function duration(seconds) {  // "45 min", "2 h 10 min", "4 d 23 h"
    var minutes = Math.max(0, Math.round(seconds / 60));
    var hours = Math.floor(minutes / 60);
    var days = Math.floor(hours / 24);
    minutes = minutes % 60;
    if (days) { return days + " d" + (hours % 24 ? " " + hours % 24 + " h" : ""); }
    if (hours && minutes) { return hours + " h " + minutes + " min"; }
    return hours ? hours + " h" : minutes + " min";
  }

  // Times in the browser's locale (its language and 12 or 24 h clock), the same way everywhere.
  var CLOCK = { hour: "numeric", minute: "2-digit" };
  var DATE_TIME = { dateStyle: "medium", timeStyle: "short" };

  function localTimes() {
    var now = Date.now();
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var at = new Date(el.dataset.deadline);
      var when = at.toDateString() === new Date().toDateString() ?
        at.toLocaleTimeString([], CLOCK) : at.toLocaleString([], DATE_TIME);
      el.textContent = "stops at " + when + " (in " + duration((at - now) / 1000) + ")";
    });
    document.querySelectorAll("time[data-local]").forEach(function (el) {
      el.textContent = new Date(el.dataset.local).toLocaleString([], DATE_TIME);
    });
  }

  // A studio's badge shows what it is doing at once; the reload shows the hub's status.
  function showStatus(box, status) {
    var scope = box.closest(".studio-row, .studio-page");
    var badge = scope && scope.querySelector(".studio-status");
    if (!badge) { return null; }
    var before = badge.dataset.status;
    badge.className = "badge studio-status studio-status-" + status;
    badge.dataset.status = status;
    badge.textContent = status;
    return before;
  }

  var dialog = document.getElementById("studio-delete-dialog");
  var pending = null;

  function act(button) {
    var box = button.closest(".studio-actions");
    var owner = box.dataset.owner, server = box.dataset.server;
    var action = button.dataset.action;
    if (action === "delete") {
      pending = box;
      dialog.querySelector(".studio-delete-name").textContent = box.dataset.name;
      dialog.querySelector(".studio-delete-volume").textContent =
        box.dataset.volume || "of this studio";
      dialog.showModal();
      return;
    }
    button.disabled = true;
    var before = showStatus(box, action === "start" ? "starting" : "stopping");
    var settled = false;
    function next() {  // the owner follows the start's progress; others see the status
      if (settled) { return; }
      settled = true;
      if (action === "start" && owner === data.user) {
        window.location.href = base + "spawn-pending/" + encodeURIComponent(owner) +
          (server ? "/" + encodeURIComponent(server) : "");  // "": the default server
      } else {
        window.location.reload();
      }
    }
    var done = action === "start" ? call("POST", owner, server) : call("DELETE", owner, server);
    done.then(next).catch(function (error) {
      if (settled) { return; }  // the page already moved on; it shows the failure itself
      settled = true;
      button.disabled = false;
      if (before) { showStatus(box, before); }
      showError(box.dataset.name + ": " + error.message);
    });
    // The hub answers a start only when it is done (or after 10 s): move on before that,
    // unless it is refused at once.
    if (action === "start") { window.setTimeout(next, 1500); }
  }

  if (dialog) {
    dialog.addEventListener("close", function () {
      if (dialog.returnValue !== "delete" || !pending) { return; }
      var box = pending;
      pending = null;
      call("DELETE", box.dataset.owner, box.dataset.server, { remove: true }).then(function () {
        var page = document.querySelector(".studio-page");
        var next = new URL(page ? base + "studios" : window.location.href, window.location.href);
        next.searchParams.delete("error");
        next.searchParams.set("message", "Deleted " + box.dataset.name);
        window.location.href = next.toString();
      }).catch(function (error) { showError(box.dataset.name + ": " + error.message); });
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (button) { act(button); }
  });
  localTimes();
  window.setInterval(localTimes, 30000);

  // While a studio starts, builds or stops, reload every few seconds to show its new status
  // (not while the user is typing or deciding in the delete dialog).
  var changing = document.querySelector(
    ".studio-status[data-status=starting], .studio-status[data-status=building], " +
    ".studio-status[data-status=stopping]");
  if (changing) {
    window.setTimeout(function again() {
      var busy = (dialog && dialog.open) ||
        (document.activeElement && document.activeElement.matches("input, select, textarea"));
      if (busy) { window.setTimeout(again, 5000); } else { window.location.reload(); }
    }, 5000);
  }
})();
