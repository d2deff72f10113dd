import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { NpyError, readNpy, writeNpy } from "./npy.js";
import { INSTALL, requireSystem } from "../test/support/require-system.js";

const PYTHON = "/usr/bin/python3";
const hasNumpy = (() => {
  if (!existsSync(PYTHON)) return false;
  try {
    execFileSync(PYTHON, ["-c", "import numpy"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();
const numpySkip = requireSystem("numpy under /usr/bin/python3", !hasNumpy && "import numpy failed", INSTALL.python);

function sampleVector(n = 512, seed = 1): Float32Array {
  const v = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    v[i] = (s / 2147483648 - 0.5) * 0.2;
  }
  return v;
}

function headerOf(bytes: Uint8Array): string {
  const len = bytes[8] | (bytes[9] << 8);
  return new TextDecoder().decode(bytes.subarray(10, 10 + len));
}

describe("writeNpy", () => {
  test("writes a format 1.0 '<f4' (512,) file with the data on a 64-byte boundary", () => {
    const bytes = writeNpy(sampleVector());
    assert.deepEqual([...bytes.subarray(0, 8)], [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
    const header = headerOf(bytes);
    assert.match(header, /^\{'descr': '<f4', 'fortran_order': False, 'shape': \(512,\), \} *\n$/);
    assert.equal((10 + header.length) % 64, 0);
    assert.equal(bytes.length, 10 + header.length + 512 * 4);
  });

  test("round-trips through readNpy bit for bit", () => {
    const v = sampleVector();
    const { shape, rows } = readNpy(writeNpy(v), 512);
    assert.deepEqual(shape, [512]);
    assert.equal(rows.length, 1);
    assert.deepEqual(rows[0], v);
  });
});

describe("readNpy refuses what it cannot read safely", () => {
  const good = writeNpy(sampleVector());
  const withHeader = (header: string, dataBytes: number, major = 1): Uint8Array => {
    const h = header.padEnd(Math.ceil((header.length + 11) / 64) * 64 - 11) + "\n";
    const out = new Uint8Array(10 + h.length + dataBytes);
    out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, 0]);
    out[8] = h.length & 0xff;
    out[9] = h.length >> 8;
    out.set(new TextEncoder().encode(h), 10);
    return out;
  };
  const cases: Array<[string, Uint8Array, RegExp, string]> = [
    ["a file without the magic string", new TextEncoder().encode('{"featureVector": []}'), /magic/, "format"],
    [
      "an unknown version",
      (() => {
        const b = good.slice();
        b[6] = 9;
        return b;
      })(),
      /version 9\.0/,
      "format",
    ],
    ["a big-endian dtype", withHeader("{'descr': '>f4', 'fortran_order': False, 'shape': (512,), }", 2048), /'>f4'/, "format"],
    ["an integer dtype", withHeader("{'descr': '<i4', 'fortran_order': False, 'shape': (512,), }", 2048), /'<i4'/, "format"],
    ["fortran order", withHeader("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 512), }", 4096), /fortran/, "format"],
    ["a 3-D array", withHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 512), }", 2048), /shape/, "format"],
    ["a truncated body", good.subarray(0, good.length - 4), /needs 2048/, "format"],
    ["a 128-d vector when 512 is expected", writeNpy(sampleVector(128)), /128 dimensions, expected 512/, "dimension"],
    ["a NaN", writeNpy(Float32Array.from(sampleVector(), (x, i) => (i === 7 ? NaN : x))), /index 7 is not finite/, "format"],
  ];
  for (const [name, bytes, message, reason] of cases) {
    test(`refuses ${name}`, () => {
      assert.throws(
        () => readNpy(bytes, 512),
        (e: unknown) => {
          assert.ok(e instanceof NpyError);
          assert.match(e.message, message);
          assert.equal(e.reason, reason);
          return true;
        },
      );
    });
  }
});

describe("interoperates with numpy", { skip: numpySkip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "nosepaw-npy-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("numpy.load reads our file as the same float32 values, and numpy.save writes the same bytes", () => {
    const v = sampleVector(512, 7);
    writeFileSync(join(dir, "ours.npy"), writeNpy(v));
    const out = execFileSync(PYTHON, [
      "-c",
      [
        "import numpy as np, sys, json, io",
        "a = np.load(sys.argv[1])",
        "buf = io.BytesIO(); np.save(buf, a)",
        "print(json.dumps({'dtype': str(a.dtype), 'shape': list(a.shape), 'values': [float(x) for x in a], 'same_bytes': buf.getvalue() == open(sys.argv[1], 'rb').read()}))",
      ].join("\n"),
      join(dir, "ours.npy"),
    ]).toString();
    const got = JSON.parse(out) as { dtype: string; shape: number[]; values: number[]; same_bytes: boolean };
    assert.equal(got.dtype, "float32");
    assert.deepEqual(got.shape, [512]);
    assert.deepEqual(Float32Array.from(got.values), v);
    assert.equal(got.same_bytes, true);
  });

  test("reads numpy-written f4, f8, (1, 512), (3, 512) and version 2.0 files", () => {
    execFileSync(PYTHON, [
      "-c",
      [
        "import numpy as np, sys, os",
        "d = sys.argv[1]",
        "base = (np.arange(512 * 3, dtype=np.float64).reshape(3, 512) / 1536.0 - 0.5) / 3.0",
        "np.save(os.path.join(d, 'f4.npy'), base[0].astype('<f4'))",
        "np.save(os.path.join(d, 'f8.npy'), base[0].astype('<f8'))",
        "np.save(os.path.join(d, 'row.npy'), base[:1].astype('<f4'))",
        "np.save(os.path.join(d, 'rows.npy'), base.astype('<f8'))",
        "with open(os.path.join(d, 'v2.npy'), 'wb') as f: np.lib.format.write_array(f, base[0].astype('<f4'), version=(2, 0))",
      ].join("\n"),
      dir,
    ]);
    const expectedRow = (r: number) => Float32Array.from({ length: 512 }, (_, i) => ((r * 512 + i) / 1536 - 0.5) / 3);
    const load = (name: string) => readNpy(new Uint8Array(readFileSync(join(dir, name))), 512);

    for (const name of ["f4.npy", "f8.npy", "v2.npy"]) {
      const a = load(name);
      assert.deepEqual(a.shape, [512], name);
      assert.deepEqual(a.rows[0], expectedRow(0), name);
    }
    assert.deepEqual(load("row.npy").shape, [1, 512]);
    assert.deepEqual(load("row.npy").rows[0], expectedRow(0));
    const rows = load("rows.npy");
    assert.deepEqual(rows.shape, [3, 512]);
    assert.equal(rows.rows.length, 3);
    for (let r = 0; r < 3; r++) assert.deepEqual(rows.rows[r], expectedRow(r));
  });
});
