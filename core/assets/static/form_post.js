(function () {
  "use strict";
  // OAuth 2.0 Form Post Response Mode: hand the answer to the application.
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.querySelector("form#form-post");
    if (form) {
      form.submit();
    }
  });
})();
