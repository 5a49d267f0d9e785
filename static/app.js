// Reports whether the picture decoded: the browser test reads this line.
(function () {
  var img = document.getElementById("picture");
  var status = document.getElementById("status");
  function report() {
    if (img.naturalWidth > 0) {
      status.textContent = "picture decoded: " + img.naturalWidth + "x" + img.naturalHeight;
      status.setAttribute("data-natural-width", String(img.naturalWidth));
    } else {
      status.textContent = "picture failed to load";
      status.setAttribute("data-natural-width", "0");
    }
  }
  if (img.complete) { report(); } else { img.addEventListener("load", report); img.addEventListener("error", report); }
})();
