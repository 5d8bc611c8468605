// emostt capture worklet: microphone frames (float32, the AudioContext's rate) in, PCM16 chunks out.
//
// Runs on the audio rendering thread. Mixes the input down to mono, resamples it to
// `processorOptions.targetRate` when that differs from the context's rate (linear interpolation:
// cheap and good enough for speech, though without an anti-aliasing filter, so energy above the
// new Nyquist frequency folds back; speech has little there), converts it to signed 16-bit and
// posts an ArrayBuffer (transferred, not copied) every `processorOptions.chunkMs` milliseconds.
// The message "flush" posts what is buffered (possibly nothing) followed by the string "flushed".

class EmosttCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = sampleRate, chunkMs = 100 } = options.processorOptions || {};
    this.step = sampleRate / targetRate; // input samples per output sample
    this.position = 0; // next output's position in the current block (-1 is `previous`)
    this.previous = 0; // the last input sample of the previous block
    this.chunk = new Int16Array(Math.max(1, Math.round((targetRate * chunkMs) / 1000)));
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.post(this.filled);
        this.port.postMessage("flushed");
      }
    };
  }

  post(samples) {
    if (samples === 0) return;
    const out = this.chunk.slice(0, samples);
    this.port.postMessage(out.buffer, [out.buffer]);
    this.filled = 0;
  }

  push(value) {
    const clamped = value < -1 ? -1 : value > 1 ? 1 : value;
    this.chunk[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === this.chunk.length) this.post(this.filled);
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // no input connected (yet)
    const n = channels[0].length;
    let mono = channels[0];
    if (channels.length > 1) {
      mono = new Float32Array(n);
      for (const channel of channels) for (let i = 0; i < n; i++) mono[i] += channel[i] / channels.length;
    }
    if (this.step === 1) {
      for (let i = 0; i < n; i++) this.push(mono[i]);
      return true;
    }
    // Linear interpolation between input samples i and i + 1 (i = -1: the previous block's last).
    let t = this.position;
    while (Math.floor(t) + 1 < n) {
      const i = Math.floor(t);
      const a = i < 0 ? this.previous : mono[i];
      const b = mono[i + 1];
      this.push(a + (b - a) * (t - i));
      t += this.step;
    }
    this.position = t - n;
    this.previous = mono[n - 1];
    return true;
  }
}

registerProcessor("emostt-capture", EmosttCaptureProcessor);
