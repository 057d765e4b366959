// Follows a certificate request (templates/request.html) or a batch (templates/batch.html) live: long-polls
// the page's status route, which answers as soon as something changes, and updates the page in place.
// Every value is written as text, never as HTML. No inline script anywhere: the CSP allows only this file.
"use strict";
(function () {
  function follow(box, query, onAnswer) {
    var failures = 0;
    function poll() {
      fetch(box.dataset.statusUrl + "?wait=25" + query(), {
        credentials: "same-origin", headers: { "Accept": "application/json" }
      }).then(function (response) {
        if (response.status === 401) { window.location.reload(); throw new Error("signed out"); }
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      }).then(function (answer) {
        failures = 0;
        onAnswer(answer);
        if (!answer.final) { poll(); }
      }).catch(function () {
        failures += 1;
        window.setTimeout(poll, Math.min(30000, 1000 * failures));
      });
    }
    poll();
  }

  function setText(id, text) { document.getElementById(id).textContent = String(text); }

  var request = document.getElementById("request");
  if (request && request.dataset.final !== "true") {
    var statusEl = document.getElementById("status");
    var outcome = document.getElementById("outcome");
    follow(request, function () { return ""; }, function (answer) {
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
    });
  }

  var batch = document.getElementById("batch");
  if (batch && batch.dataset.final !== "true") {
    var progress = document.getElementById("batch-progress");
    follow(batch, function () { return "&seen=" + encodeURIComponent(batch.dataset.seen); }, function (answer) {
      var done = answer.issued + answer.failed;
      batch.dataset.seen = String(done);
      progress.value = done;
      progress.textContent = done + " of " + answer.total;
      setText("batch-done", done);
      setText("batch-issued", answer.issued);
      setText("batch-failed", answer.failed);
      setText("batch-pending", answer.pending);
      var state = document.getElementById("batch-status");
      state.textContent = answer.status;
      state.className = "status status-" + answer.status;
      if (answer.final) {
        // The items' results are rendered by the server: fetch them once, now that they are all final.
        var link = document.createElement("a");
        link.href = window.location.pathname;
        link.id = "batch-results";
        link.textContent = "Show every item's result";
        var p = document.createElement("p");
        p.appendChild(link);
        batch.appendChild(p);
      }
    });
  }
})();
