// WasmWiz pages: progressive enhancement only. Every page works without
// this script; it adds a copy button, a confirmation dialog before a
// revocation, and upload progress.
"use strict";

(function () {
  function initCopy(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      var target = document.getElementById(button.getAttribute("data-copy"));
      if (!target) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        var text = target.value !== undefined ? target.value : target.textContent;
        var done = function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 2000);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { selectText(target); });
        } else {
          selectText(target);
          try { if (document.execCommand("copy")) done(); } catch (e) { /* the text stays selected */ }
        }
      });
    });
  }

  function selectText(el) {
    if (el.select) { el.focus(); el.select(); }
  }

  // A form with data-confirm asks first; when the person agrees it goes
  // with confirm=yes, else the server would ask on a page of its own.
  function initConfirm(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        var field = form.querySelector("input[name=confirm]");
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
          return;
        }
        if (field) field.value = "yes";
      });
    });
  }

  // A form with data-progress is sent with XMLHttpRequest so that the
  // upload's progress shows; the answer then replaces the page as a normal
  // submission would.
  function initProgress(root) {
    root.querySelectorAll("form[data-progress]").forEach(function (form) {
      var bar = form.querySelector("progress");
      var text = form.querySelector(".progress-text");
      if (!bar || !window.FormData || !window.XMLHttpRequest) return;
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var button = form.querySelector("button[type=submit]");
        var xhr = new XMLHttpRequest();
        xhr.open("POST", form.action);
        xhr.upload.addEventListener("progress", function (e) {
          if (!e.lengthComputable) return;
          var pct = Math.round(100 * e.loaded / e.total);
          bar.value = pct;
          if (text) text.textContent = "Uploading… " + pct + " %";
        });
        xhr.addEventListener("load", function () {
          var sent = new URL(form.action, location.href).href;
          if (xhr.status < 300 && xhr.responseURL && xhr.responseURL !== sent) {
            location.assign(xhr.responseURL);
            return;
          }
          replacePage(xhr.responseText);
        });
        xhr.addEventListener("error", function () {
          if (text) text.textContent = "The upload failed: check the connection and try again.";
          if (button) button.disabled = false;
        });
        bar.hidden = false;
        if (text) { text.hidden = false; text.textContent = "Uploading…"; }
        if (button) button.disabled = true;
        xhr.send(new FormData(form));
      });
    });
  }

  function replacePage(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    document.title = doc.title;
    document.body.replaceWith(document.adoptNode(doc.body));
    init(document);
  }

  function init(root) {
    initCopy(root);
    initConfirm(root);
    initProgress(root);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  } else {
    init(document);
  }
})();
