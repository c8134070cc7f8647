/**
 * Test credentials made with `openssl` (v3 extensions) in a temporary directory, in QEMU's
 * tls-creds-x509 layout: a CA, a server and a client certificate, plus the bad cases the
 * tests need (a second CA's client, a client with another DN, an expired certificate); and a
 * client outside the program's own transport, to knock on a tls-listen: port.
 *
 * @module
 */

const EXTENSIONS = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
`;

async function openssl(cwd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Where the generated files are. */
export interface TestCreds {
  /** The temporary root; remove it with {@linkcode removeCreds}. */
  root: string;
  /** ca-cert.pem, server-*, client-* (subject `O=Example,CN=client`), in QEMU's layout. */
  dir: string;
  /** A client signed by a second CA; ca-cert.pem is the right CA, so it trusts our server. */
  otherCaDir: string;
  /** A client of the right CA with subject `O=Example,CN=intruder`. */
  wrongDnDir: string;
  /** `dir` with an expired server certificate. */
  expiredDir: string;
  /** `dir` whose server-key.pem belongs to the client certificate. */
  mismatchDir: string;
  /** `dir` whose server certificate was signed by the second CA. */
  foreignServerDir: string;
}

async function makeCa(root: string, name: string, subject: string): Promise<void> {
  await openssl(
    root,
    ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
    ...["-keyout", `${name}-key.pem`, "-out", `${name}-cert.pem`, "-days", "30"],
    ...["-subj", subject, "-config", "ext.cnf", "-extensions", "ca"],
  );
}

async function issue(
  root: string,
  ca: string,
  name: string,
  subject: string,
  kind: "server" | "client",
  days = 30,
): Promise<void> {
  await openssl(
    root,
    ...["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
    ...["-keyout", `${name}-key.pem`, "-subj", subject, "-out", `${name}.csr`],
  );
  await openssl(
    root,
    ...["x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}-cert.pem`, "-CAkey", `${ca}-key.pem`],
    ...["-CAcreateserial", "-days", String(days), "-extfile", "ext.cnf", "-extensions", kind],
    ...["-out", `${name}-cert.pem`],
  );
}

async function layout(
  root: string,
  dir: string,
  files: Record<"ca" | "server" | "serverKey" | "client" | "clientKey", string>,
): Promise<string> {
  const path = `${root}/${dir}`;
  await Deno.mkdir(path);
  const copy = (from: string, to: string) => Deno.copyFile(`${root}/${from}`, `${path}/${to}`);
  await copy(files.ca, "ca-cert.pem");
  await copy(files.server, "server-cert.pem");
  await copy(files.serverKey, "server-key.pem");
  await copy(files.client, "client-cert.pem");
  await copy(files.clientKey, "client-key.pem");
  return path;
}

/** Generates every credential the TLS tests use. */
export async function makeCreds(): Promise<TestCreds> {
  const root = await Deno.makeTempDir({ prefix: "colo-tls-" });
  await Deno.writeTextFile(`${root}/ext.cnf`, EXTENSIONS);
  await makeCa(root, "ca", "/O=Example/CN=Test CA");
  await makeCa(root, "ca2", "/O=Other/CN=Other CA");
  await issue(root, "ca", "server", "/O=Example/CN=server", "server");
  await issue(root, "ca", "client", "/O=Example/CN=client", "client");
  await issue(root, "ca2", "other", "/O=Example/CN=client", "client");
  await issue(root, "ca", "intruder", "/O=Example/CN=intruder", "client");
  await issue(root, "ca", "expired", "/O=Example/CN=server", "server", -1);
  await issue(root, "ca2", "foreign", "/O=Example/CN=server", "server");
  const good = {
    ca: "ca-cert.pem",
    server: "server-cert.pem",
    serverKey: "server-key.pem",
    client: "client-cert.pem",
    clientKey: "client-key.pem",
  };
  return {
    root,
    dir: await layout(root, "good", good),
    otherCaDir: await layout(root, "other-ca", {
      ...good,
      client: "other-cert.pem",
      clientKey: "other-key.pem",
    }),
    wrongDnDir: await layout(root, "wrong-dn", {
      ...good,
      client: "intruder-cert.pem",
      clientKey: "intruder-key.pem",
    }),
    expiredDir: await layout(root, "expired", {
      ...good,
      server: "expired-cert.pem",
      serverKey: "expired-key.pem",
    }),
    mismatchDir: await layout(root, "mismatch", { ...good, serverKey: "client-key.pem" }),
    foreignServerDir: await layout(root, "foreign", {
      ...good,
      server: "foreign-cert.pem",
      serverKey: "foreign-key.pem",
    }),
  };
}

/** Removes what {@linkcode makeCreds} made. */
export async function removeCreds(creds: TestCreds): Promise<void> {
  await Deno.remove(creds.root, { recursive: true });
}

/** A client outside our transport (Deno's rustls), with whatever client pair `dir` holds. */
export async function rawClient(port: number, dir: string, withCert = true): Promise<Deno.TlsConn> {
  const read = (f: string) => Deno.readTextFileSync(`${dir}/${f}`);
  return await Deno.connectTls({
    hostname: "127.0.0.1",
    port,
    caCerts: [read("ca-cert.pem")],
    ...(withCert ? { cert: read("client-cert.pem"), key: read("client-key.pem") } : {}),
  });
}

/** Sends `data` and returns once the server has closed the connection on us. */
export async function sendUntilRefused(
  conn: Deno.TlsConn,
  data: Uint8Array | string,
): Promise<void> {
  try {
    await conn.handshake();
    await conn.write(typeof data === "string" ? new TextEncoder().encode(data) : data);
    while (await conn.read(new Uint8Array(64)) !== null) { /* nothing is ever sent to us */ }
  } catch {
    // the alert or the reset that refuses us
  } finally {
    conn.close();
  }
}
