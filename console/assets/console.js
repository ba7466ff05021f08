// The webhook guard console's one script: it performs the actions (Retry,
// Retry all, Discard, Pause, Resume). The pages read without it.
(function () {
  "use strict";

  var status = document.getElementById("status");
  var dialog = document.getElementById("confirm");
  var dialogText = document.getElementById("confirm-text");
  var yes = document.getElementById("confirm-yes");
  var no = document.getElementById("confirm-no");
  var pending = null; // the button whose action waits for a confirmation

  // say shows a message in the status region (as text, never as HTML).
  function say(text, isError) {
    status.textContent = text;
    status.className = isError ? "status error" : "status";
  }

  // A message left by the action performed before the page was reloaded.
  var done = sessionStorage.getItem("webhook-guard-console-done");
  if (done) {
    sessionStorage.removeItem("webhook-guard-console-done");
    say(done, false);
  }

  // act sends the button's action: a same-origin POST with a JSON body and
  // the console's header; the page is reloaded when it is done.
  function act(button) {
    var body = {};
    if (button.dataset.id) { body.id = button.dataset.id; }
    if (button.dataset.scope) { body.scope = button.dataset.scope; }
    if (button.dataset.state) { body.state = button.dataset.state; }
    button.disabled = true;
    say(button.textContent + "…", false);
    fetch(button.dataset.url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Webhook-Guard-Console": "1" },
      body: JSON.stringify(body)
    }).then(function (resp) {
      return resp.json().catch(function () {
        return { error: "the console answered " + resp.status };
      }).then(function (answer) {
        if (resp.ok) {
          sessionStorage.setItem("webhook-guard-console-done", answer.message || "Done.");
          window.location.reload();
          return;
        }
        say(button.textContent + " failed: " + (answer.error || resp.status), true);
        button.disabled = false;
      });
    }).catch(function (err) {
      say(button.textContent + " failed: " + err.message, true);
      button.disabled = false;
    });
  }

  function openConfirm(button) {
    pending = button;
    dialogText.textContent = button.dataset.confirm;
    yes.textContent = button.textContent.replace(/\s*\(\d+\)$/, "");
    dialog.hidden = false;
    no.focus();
  }

  function closeConfirm() {
    var button = pending;
    pending = null;
    dialog.hidden = true;
    if (button) { button.focus(); }
  }

  yes.addEventListener("click", function () {
    var button = pending;
    closeConfirm();
    if (button) { act(button); }
  });
  no.addEventListener("click", closeConfirm);
  dialog.addEventListener("keydown", function (e) {
    if (e.key === "Escape") {
      e.preventDefault();
      closeConfirm();
    } else if (e.key === "Tab") {
      // Keep the focus on the dialog's two buttons.
      e.preventDefault();
      (document.activeElement === yes ? no : yes).focus();
    }
  });

  var buttons = document.querySelectorAll("button[data-action]");
  Array.prototype.forEach.call(buttons, function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      if (button.dataset.confirm) {
        openConfirm(button);
      } else {
        act(button);
      }
    });
  });
})();
