// Studio spawn form behaviour: show the chosen environment source, import environment.yml
// from a file, and say which fields do not apply. Validation happens on the hub, and nothing
// the user typed is dropped: a field that does not apply is flagged, never disabled.
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

  function condaAllowed() {
    if (source() === "custom") return condaWithCustom && !isTool();
    const template = $('input[name="template"]:checked');
    return !template || template.dataset.conda !== "false";
  }

  function refresh() {
    $$("[data-source]").forEach((el) => { el.hidden = el.dataset.source !== source(); });
    const conda = condaAllowed();
    $(".studio-conda-off").hidden = conda;
    $(".studio-tool-off").hidden = !isTool();
    const keep = $("#studio-keep-running");
    const hours = $("#studio-lifespan");
    if (keep && hours) hours.disabled = keep.checked;
  }

  $("#studio-environment-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (!file) return;
    file.text().then((text) => { $("#studio-environment-yml").value = text; });
  });
  form.addEventListener("change", refresh);
  refresh();
})();
