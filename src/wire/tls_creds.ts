/**
 * TLS credentials in QEMU's `tls-creds-x509` directory layout (SPEC 11), read and checked once
 * at start: a missing file, a key that does not parse or does not match its certificate, an
 * expired certificate or one the CA did not sign ends the program with one line that names
 * the file and the problem.
 *
 * @module
 */

import { createPrivateKey, X509Certificate } from "node:crypto";
import { type Address, usesTls } from "./address.ts";
import { certificateVersion } from "./x509.ts";

/** QEMU's file names (crypto/tlscredsx509.h). */
export const TLS_FILES = {
  ca: "ca-cert.pem",
  serverCert: "server-cert.pem",
  serverKey: "server-key.pem",
  clientCert: "client-cert.pem",
  clientKey: "client-key.pem",
} as const;

/** A certificate and its private key, as PEM text. */
export interface KeyPair {
  cert: string;
  key: string;
}

/** What the TLS transport needs, read from `--tls-creds DIR`. */
export interface TlsCredentials {
  dir: string;
  /** `ca-cert.pem` as PEM text (one or more certificates). */
  caPem: string;
  /** The CA certificates, to check a peer's chain ourselves. */
  caCerts: X509Certificate[];
  /** `server-cert.pem`/`server-key.pem`, when some address listens. */
  server: KeyPair | null;
  /** `client-cert.pem`/`client-key.pem`, when some address connects. */
  client: KeyPair | null;
}

/** Bad credentials; `message` names the file and the problem. */
export class CredentialsError extends Error {}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function readPem(dir: string, file: string): string {
  const path = `${dir}/${file}`;
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable
      ? "permission denied"
      : error instanceof Deno.errors.IsADirectory
      ? "is a directory"
      : error instanceof Error
      ? error.message
      : String(error);
    throw new CredentialsError(`${path}: cannot read it (${why})`);
  }
}

function parseCerts(path: string, pem: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new CredentialsError(`${path}: no PEM certificate in it`);
  return blocks.map((block) => {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(block);
    } catch {
      throw new CredentialsError(`${path}: not a valid X.509 certificate`);
    }
    if (certificateVersion(new Uint8Array(cert.raw)) !== 3) {
      throw new CredentialsError(
        `${path}: an X.509 v1 certificate, which TLS here refuses; regenerate it with v3 extensions`,
      );
    }
    return cert;
  });
}

function checkValidity(path: string, cert: X509Certificate, now: Date): void {
  if (cert.validToDate.getTime() < now.getTime()) {
    throw new CredentialsError(
      `${path}: the certificate expired on ${cert.validToDate.toISOString()}; issue a new one`,
    );
  }
  if (cert.validFromDate.getTime() > now.getTime()) {
    throw new CredentialsError(
      `${path}: the certificate is not valid before ${cert.validFromDate.toISOString()}; check the clock or reissue it`,
    );
  }
}

/** True when `cert` was issued and signed by one of `cas`. */
export function signedBy(cert: X509Certificate, cas: readonly X509Certificate[]): boolean {
  return cas.some((ca) => {
    try {
      return cert.checkIssued(ca) && cert.verify(ca.publicKey);
    } catch {
      return false;
    }
  });
}

function loadPair(
  dir: string,
  certFile: string,
  keyFile: string,
  cas: X509Certificate[],
  now: Date,
): KeyPair {
  const certPath = `${dir}/${certFile}`;
  const keyPath = `${dir}/${keyFile}`;
  const cert = readPem(dir, certFile);
  const key = readPem(dir, keyFile);
  const [leaf] = parseCerts(certPath, cert);
  checkValidity(certPath, leaf, now);
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    throw new CredentialsError(
      `${keyPath}: not an unencrypted PEM private key; write it without a passphrase`,
    );
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new CredentialsError(`${keyPath}: does not match ${certFile} (another key pair's key)`);
  }
  if (!signedBy(leaf, cas)) {
    throw new CredentialsError(
      `${certPath}: not signed by ${TLS_FILES.ca}; issue it with that CA or use that CA's directory`,
    );
  }
  return { cert, key };
}

/**
 * Reads and checks the files of `dir` that the addresses need: the server pair when some
 * address listens, the client pair when some address connects. Throws
 * {@linkcode CredentialsError}.
 */
export function loadCredentials(
  dir: string,
  needs: { server: boolean; client: boolean },
  now = new Date(),
): TlsCredentials {
  const caPath = `${dir}/${TLS_FILES.ca}`;
  const caPem = readPem(dir, TLS_FILES.ca);
  const caCerts = parseCerts(caPath, caPem);
  for (const ca of caCerts) {
    checkValidity(caPath, ca, now);
    if (!ca.ca) {
      throw new CredentialsError(
        `${caPath}: not a CA certificate (it needs basicConstraints CA:TRUE)`,
      );
    }
  }
  return {
    dir,
    caPem,
    caCerts,
    server: needs.server
      ? loadPair(dir, TLS_FILES.serverCert, TLS_FILES.serverKey, caCerts, now)
      : null,
    client: needs.client
      ? loadPair(dir, TLS_FILES.clientCert, TLS_FILES.clientKey, caCerts, now)
      : null,
  };
}

/**
 * The credentials `addresses` need from `--tls-creds DIR`, or null when none is a tls
 * address. Throws {@linkcode CredentialsError}.
 */
export function credentialsFor(
  dir: string | null,
  addresses: readonly Address[],
): TlsCredentials | null {
  const tls = addresses.filter(usesTls);
  if (dir === null || tls.length === 0) return null;
  return loadCredentials(dir, {
    server: tls.some((a) => a.listen),
    client: tls.some((a) => !a.listen),
  });
}
