// Passkey ceremonies for Sesame's pages: sign in (button, autofill,
// email-first), add, rename and delete passkeys, sign out elsewhere.
// Plain JavaScript, no dependencies, no inline script (CSP: script-src 'self').
(function () {
  "use strict";

  var PKC = window.PublicKeyCredential;
  var supported = !!(PKC && PKC.parseRequestOptionsFromJSON && PKC.parseCreationOptionsFromJSON);
  var status = document.getElementById("passkey-status");

  function say(text) {
    if (status) { status.textContent = text; }
  }

  function call(method, path, body) {
    var init = { method: method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch("/.sesame" + path, init).then(function (r) {
      if (r.status === 204) { return null; }
      return r.json().then(function (j) {
        if (!r.ok) {
          var e = new Error(j.message || "failed");
          e.code = j.error;
          e.body = j;
          throw e;
        }
        return j;
      });
    });
  }

  // Remember on this device which addresses have a passkey, so the email
  // field can offer it; the server never says (no account enumeration).
  var KEY = "sesame.passkeys";
  function known() {
    try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; }
  }
  function remember(email) {
    if (!email) { return; }
    var list = known();
    email = email.toLowerCase();
    if (list.indexOf(email) < 0) { list.push(email); }
    try { localStorage.setItem(KEY, JSON.stringify(list)); } catch (e) { /* private mode */ }
  }

  // WebAuthn Signal API (feature-detected; a browser without it loses
  // nothing): tell the passkey provider which credentials this account
  // still accepts, under which names, and which one no user has any more.
  function quietly(fn, arg) {
    if (typeof fn !== "function") { return Promise.resolve(); }
    try {
      return Promise.resolve(fn.call(PKC, arg)).catch(function () { /* not supported here */ });
    } catch (e) {
      return Promise.resolve();
    }
  }
  function signalAccepted(s) {
    if (!PKC || !s) { return Promise.resolve(); }
    return Promise.all([
      quietly(PKC.signalAllAcceptedCredentials,
        { rpId: s.rpId, userId: s.userId, allAcceptedCredentialIds: s.allAcceptedCredentialIds }),
      quietly(PKC.signalCurrentUserDetails,
        { rpId: s.rpId, userId: s.userId, name: s.name, displayName: s.displayName }),
    ]);
  }
  function signalUnknown(e) {
    var u = e && e.body && e.body.unknown_credential;
    if (!PKC || !u) { return Promise.resolve(); }
    return quietly(PKC.signalUnknownCredential, { rpId: u.rpId, credentialId: u.credentialId });
  }
  var signalled = document.getElementById("passkey-signal");
  if (signalled) {
    try { signalAccepted(JSON.parse(signalled.getAttribute("data-signal"))); } catch (e) { /* ignore */ }
  }

  function signIn(body, mediation, signal) {
    return call("POST", "/passkey/login/start", body).then(function (opts) {
      var req = { publicKey: PKC.parseRequestOptionsFromJSON(opts.publicKey) };
      if (mediation) { req.mediation = mediation; }
      if (signal) { req.signal = signal; }
      return navigator.credentials.get(req);
    }).then(function (cred) {
      return call("POST", "/passkey/login/finish", cred.toJSON()).catch(function (e) {
        return signalUnknown(e).then(function () { throw e; });
      });
    }).then(function (res) {
      remember(body.email);
      return signalAccepted(res.signal).then(function () {
        window.location.assign(res.redirect);
      });
    });
  }

  function register(email) {
    return call("POST", "/passkey/register/start", {}).then(function (opts) {
      return navigator.credentials.create({ publicKey: PKC.parseCreationOptionsFromJSON(opts.publicKey) });
    }).then(function (cred) {
      return call("POST", "/passkey/register/finish", cred.toJSON());
    }).then(function (passkey) {
      remember(email);
      return passkey;
    });
  }

  // An account that has a passkey changes its passkeys only with a fresh
  // proof: a passkey sign-in (the page comes back signed in by passkey;
  // then try again), or a code sent by email for this purpose.
  function prove(email) {
    var usePasskey = supported && window.confirm(
      "To change your passkeys, confirm it is you.\n\nOK: sign in with one of your passkeys.\nCancel: get a code by email.");
    if (usePasskey) {
      say("Waiting for your passkey…");
      return signIn({ email: email, rd: window.location.href }).then(function () {
        throw new Error("signed in again: try once more");
      });
    }
    return call("POST", "/passkey/proof/start", {}).then(function () {
      var code = window.prompt("We sent a code to " + email + ". Type it here:");
      if (!code) { throw new Error("no code typed"); }
      return call("POST", "/passkey/proof/finish", { code: code });
    });
  }

  function withProof(email, action) {
    return action().catch(function (e) {
      if (e && e.code === "passkey_proof_required") {
        return prove(email).then(action);
      }
      throw e;
    });
  }

  function failed(e) {
    if (e && e.code === "reauthenticate") {
      say("To add a passkey, sign in again by email first.");
    } else if (e && e.name === "NotAllowedError") {
      say("No passkey was used.");
    } else {
      say("That did not work" + (e && e.message ? ": " + e.message : "") + ".");
    }
  }

  // Login page: button, autofill, and email-first.
  var button = document.getElementById("passkey-signin");
  var form = document.getElementById("login-form");
  if (button && supported) {
    var rd = button.getAttribute("data-rd") || "";
    var autofill = null;
    button.hidden = false;
    if (PKC.isConditionalMediationAvailable) {
      PKC.isConditionalMediationAvailable().then(function (ok) {
        if (!ok) { return; }
        autofill = new AbortController();
        signIn({ rd: rd }, "conditional", autofill.signal).catch(function () { /* dismissed or aborted */ });
      });
    }
    button.addEventListener("click", function () {
      if (autofill) { autofill.abort(); autofill = null; }
      say("Waiting for your passkey…");
      signIn({ rd: rd }).catch(failed);
    });
    if (form) {
      form.addEventListener("submit", function (ev) {
        var email = (form.elements.email.value || "").trim().toLowerCase();
        if (known().indexOf(email) < 0) { return; }
        ev.preventDefault();
        if (autofill) { autofill.abort(); autofill = null; }
        say("Use your passkey to sign in, or wait for a link by email.");
        signIn({ email: email, rd: rd }).catch(function () { form.submit(); });
      });
    }
  }

  // Step-up page.
  var stepup = document.getElementById("passkey-stepup");
  if (stepup && supported) {
    stepup.addEventListener("click", function () {
      say("Waiting for your passkey…");
      signIn({ email: stepup.getAttribute("data-email"), rd: stepup.getAttribute("data-rd") }).catch(failed);
    });
  }

  // Add a passkey (account page, post-sign-in offer, step-up page).
  var add = document.getElementById("passkey-add");
  if (add) {
    if (!supported) {
      add.disabled = true;
      say("This browser cannot use passkeys.");
    }
    add.addEventListener("click", function () {
      var email = add.getAttribute("data-email");
      say("Follow your browser's prompt…");
      withProof(email, function () { return register(email); }).then(function () {
        var then = add.getAttribute("data-then");
        var stepupRd = add.getAttribute("data-then-stepup");
        if (stepupRd) {
          return signIn({ email: email, rd: stepupRd });
        }
        window.location.assign(then || window.location.href);
      }).catch(failed);
    });
  }

  // Account page: rename, delete, sign out elsewhere.
  document.addEventListener("click", function (ev) {
    var t = ev.target;
    if (!(t instanceof HTMLElement)) { return; }
    var id = t.getAttribute("data-rename");
    if (id) {
      var name = window.prompt("New name", t.getAttribute("data-name") || "");
      if (name) {
        call("PATCH", "/api/passkeys/" + encodeURIComponent(id), { name: name })
          .then(function () { window.location.reload(); }, failed);
      }
      return;
    }
    id = t.getAttribute("data-delete");
    if (id) {
      if (window.confirm("Delete the passkey \u201c" + (t.getAttribute("data-name") || "") + "\u201d? It will no longer sign you in.")) {
        var owner = (document.getElementById("passkey-add") || t).getAttribute("data-email");
        withProof(owner, function () { return call("DELETE", "/api/passkeys/" + encodeURIComponent(id)); })
          .then(function () { window.location.reload(); }, failed);
      }
      return;
    }
    id = t.getAttribute("data-signout");
    if (id) {
      if (window.confirm("Sign out " + (t.getAttribute("data-name") || "this session") + "?")) {
        call("DELETE", "/api/sessions/" + encodeURIComponent(id))
          .then(function () { window.location.reload(); }, failed);
      }
      return;
    }
    if (t.id === "signout-others") {
      call("DELETE", "/api/sessions").then(function () { window.location.reload(); }, failed);
    }
  });
}());
