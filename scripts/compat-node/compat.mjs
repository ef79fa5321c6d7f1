// One SDK client of the compatibility suite, driven by scripts/compat.py over stdin/stdout:
// each input line is {"path": FILE}; each output line is {"label": top label} or
// {"error": "Class: message", "class": Class, "code": ...}.
//
//   node compat.mjs aws BASE_URL          # @aws-sdk/client-rekognition, endpoint: BASE_URL
//   node compat.mjs google-rest BASE_URL  # @google-cloud/vision, fallback: "rest", apiEndpoint
//   node compat.mjs google-grpc BASE_URL  # @google-cloud/vision, its default gRPC transport,
//                                         # apiEndpoint + port + an insecure (h2c) channel
//
// AWS keys come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

const [mode, base] = process.argv.slice(2);
let classify;

if (mode === "aws") {
  const { RekognitionClient, DetectLabelsCommand } = await import("@aws-sdk/client-rekognition");
  const client = new RekognitionClient({
    endpoint: base,
    region: "us-east-1",
    maxAttempts: 1,
    requestHandler: { connectionTimeout: 5000, requestTimeout: 30000 },
    credentials: {
      accessKeyId: process.env.COMPAT_JS_KEY_ID,
      secretAccessKey: process.env.COMPAT_JS_SECRET,
    },
  });
  classify = async (bytes) => {
    const r = await client.send(new DetectLabelsCommand({ Image: { Bytes: bytes }, MaxLabels: 5 }));
    const labels = [...r.Labels].sort((a, b) => b.Confidence - a.Confidence);
    return { label: labels[0].Name };
  };
} else if (mode === "google-rest" || mode === "google-grpc") {
  const vision = await import("@google-cloud/vision");
  const url = new URL(base);
  let client;
  if (mode === "google-rest") {
    client = new vision.default.ImageAnnotatorClient({
      fallback: "rest",
      apiEndpoint: url.hostname,
      port: Number(url.port),
      protocol: url.protocol.replace(":", ""),
      apiKey: "compat-fake-key",
    });
  } else {
    // The default transport (gRPC via @grpc/grpc-js). Channel credentials given as sslCreds
    // are used as they are (google-gax then asks for no Google credentials): cleartext h2c.
    const { default: grpc } = await import("@grpc/grpc-js");
    client = new vision.default.ImageAnnotatorClient({
      apiEndpoint: url.hostname,
      port: Number(url.port),
      sslCreds: grpc.credentials.createInsecure(),
    });
  }
  classify = async (bytes) => {
    const [r] = await client.labelDetection({ image: { content: bytes } }, { timeout: 30000, retry: null });
    if (r.error && r.error.code) {
      return { error: `response.error code ${r.error.code} (no exception)`, code: r.error.code, soft: true };
    }
    const labels = [...r.labelAnnotations].sort((a, b) => b.score - a.score);
    return { label: labels[0].description };
  };
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const { path } = JSON.parse(line);
  let out;
  try {
    out = await classify(readFileSync(path));
  } catch (e) {
    const cls = e?.name || e?.constructor?.name || "Error";
    out = { error: `${cls}: ${String(e?.message || e).slice(0, 200)}`, class: cls, code: e?.code ?? null };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}
