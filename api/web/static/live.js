// Follows a certificate request live on its page (api/web/templates/request.html): long-polls the page's
// status route, which answers as soon as the request changes, and updates the page without a reload.
// Every value is written as text (never as HTML).
"use strict";
(function () {
  var box = document.getElementById("request");
  if (!box || box.dataset.final === "true") { return; }
  var statusUrl = box.dataset.statusUrl;
  var statusEl = document.getElementById("status");
  var outcome = document.getElementById("outcome");
  var failures = 0;

  function show(answer) {
    statusEl.textContent = answer.status;
    statusEl.className = "status status-" + answer.status;
    if (!answer.final) { return; }
    outcome.textContent = "";
    var p = document.createElement("p");
    if (answer.certificateUrl) {
      var a = document.createElement("a");
      a.id = "certificate-link";
      a.href = answer.certificateUrl;
      a.textContent = "View the certificate";
      p.appendChild(a);
    } else {
      p.id = "error-message";
      p.className = "problem";
      p.setAttribute("role", "alert");
      p.textContent = answer.errorMessage || "The request failed.";
    }
    outcome.appendChild(p);
  }

  function poll() {
    fetch(statusUrl + "?wait=25", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); throw new Error("signed out"); }
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      })
      .then(function (answer) {
        failures = 0;
        show(answer);
        if (!answer.final) { poll(); }
      })
      .catch(function () {
        failures += 1;
        window.setTimeout(poll, Math.min(30000, 1000 * failures));
      });
  }
  poll();
})();
