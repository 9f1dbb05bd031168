// faceledger console: the webcam capture for enrolment (progressive: the page works without it, by file upload).
(function () {
  "use strict";
  function setup(box) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.DataTransfer) { return; }
    var input = document.getElementById(box.getAttribute("data-webcam-for"));
    var video = box.querySelector("[data-webcam-video]");
    var start = box.querySelector("[data-webcam-start]");
    var capture = box.querySelector("[data-webcam-capture]");
    var status = box.querySelector("[data-webcam-status]");
    box.hidden = false;
    start.addEventListener("click", function () {
      navigator.mediaDevices.getUserMedia({ video: true, audio: false }).then(function (stream) {
        video.srcObject = stream;
        video.hidden = false;
        capture.hidden = false;
        video.play();
        status.textContent = "The webcam is on. Take the photo when the face is in view.";
        capture.focus();
      }).catch(function (err) { status.textContent = "The webcam is not available: " + err.message; });
    });
    capture.addEventListener("click", function () {
      var canvas = document.createElement("canvas");
      canvas.width = video.videoWidth; canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      canvas.toBlob(function (blob) {
        var files = new DataTransfer();
        Array.prototype.forEach.call(input.files, function (f) { files.items.add(f); });
        files.items.add(new File([blob], "webcam-" + Date.now() + ".jpg", { type: "image/jpeg" }));
        input.files = files.files;
        status.textContent = input.files.length + " photo(s) ready to enrol.";
      }, "image/jpeg", 0.92);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-webcam-for]"), setup);
  });
})();
