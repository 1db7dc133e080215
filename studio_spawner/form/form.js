// Studio spawn form behaviour: show the chosen environment source, import environment.yml
// from a file, disable the fields the chosen environment refuses (with a note saying why;
// switching back enables them with the text kept), mark the fields the hub found invalid,
// and show that a submit is under way. Validation happens on the hub.
(function () {
  "use strict";
  const form = document.getElementById("studio-form");
  if (!form) return;
  const $ = (selector) => form.querySelector(selector);
  const $$ = (selector) => Array.from(form.querySelectorAll(selector));
  const condaWithCustom = form.dataset.condaWithCustom === "true";

  function source() {
    const checked = $('input[name="environment_source"]:checked');
    return checked ? checked.value : "template";
  }

  function isTool() {
    if (source() === "custom") {
      const kind = $('input[name="kind"]:checked');
      return Boolean(kind && kind.value === "tool");
    }
    const template = $('input[name="template"]:checked');
    return Boolean(template && template.dataset.kind === "tool");
  }

  /** Why the chosen environment takes no Conda packages, or "" when it takes them. */
  function condaRefusal() {
    if (isTool()) return "Web tools run their image as it is, without Conda packages.";
    if (source() === "custom") {
      return condaWithCustom ? "" :
        "Conda packages cannot be added to a custom image here; choose a template to add them.";
    }
    const template = $('input[name="template"]:checked');
    return template && template.dataset.conda === "false" ?
      "This template does not accept Conda packages." : "";
  }

  /** Disable `field` (and `extra`) when `reason` is set, showing `reason` in `note`. */
  function applies(field, note, reason, extra) {
    [field, extra].forEach((el) => { if (el) el.disabled = Boolean(reason); });
    note.hidden = !reason;
    note.textContent = reason;
  }

  function refresh() {
    $$("[data-source]").forEach((el) => { el.hidden = el.dataset.source !== source(); });
    applies($("#studio-environment-yml"), $(".studio-conda-off"), condaRefusal(),
            $("#studio-environment-file"));
    applies($("#studio-init"), $(".studio-tool-off"),
            isTool() ? "Web tools run their own command, without an init script." : "");
    const keep = $("#studio-keep-running");
    const hours = $("#studio-lifespan");
    if (keep && hours) hours.disabled = keep.checked;
  }

  // Fields the hub found invalid: red border, aria-invalid, and the message as description.
  $$(".studio-error[data-field]").forEach((error) => {
    error.id = error.id || "studio-error-" + error.dataset.field;
    $$('[name="' + error.dataset.field + '"]').forEach((input) => {
      input.classList.add("is-invalid");
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", error.id);
    });
  });

  // While the hub saves (and starts) the studio, which takes seconds: no second submit, and a
  // "Saving…" / "Starting…" label on the button pressed. A page shown again from the
  // back-forward cache gets its buttons back.
  const outer = form.closest("form");
  const buttons = () => outer ?
    Array.from(outer.querySelectorAll("button[type=submit], input[type=submit]")) : [];
  let labels = new Map();

  function busy(submitter) {
    labels = new Map(buttons().map((b) => [b, b.innerHTML]));
    if (submitter && submitter.name) {  // a disabled button's value is not sent: keep it
      const keep = document.createElement("input");
      keep.type = "hidden";
      keep.name = submitter.name;
      keep.value = submitter.value;
      keep.className = "studio-submitter";
      outer.appendChild(keep);
    }
    buttons().forEach((b) => { b.disabled = true; });
    if (submitter && submitter.tagName === "BUTTON") {
      const starting = /start/i.test(submitter.value + " " + submitter.textContent);
      submitter.setAttribute("aria-busy", "true");
      submitter.innerHTML = '<span class="spinner-border spinner-border-sm me-1" ' +
        'aria-hidden="true"></span>' + (starting ? "Starting…" : "Saving…");
    }
  }

  function idle() {
    outer.querySelectorAll(".studio-submitter").forEach((el) => el.remove());
    labels.forEach((html, b) => { b.innerHTML = html; b.disabled = false; b.removeAttribute("aria-busy"); });
    labels = new Map();
  }

  if (outer) {
    outer.addEventListener("submit", (event) => {
      if (outer.querySelector(".studio-submitter") || labels.size) {
        event.preventDefault();  // already submitted
        return;
      }
      busy(event.submitter);
    });
    window.addEventListener("pageshow", (event) => { if (event.persisted) idle(); });
  }

  $("#studio-environment-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (!file) return;
    file.text().then((text) => { $("#studio-environment-yml").value = text; });
  });
  form.addEventListener("change", refresh);
  refresh();
})();
