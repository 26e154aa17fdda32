/*
 * Mutual TLS for Java programs that talk to `mtls server` / `mtls connector` (docs/java.md):
 * an SSLContext from a PKCS#12 keystore (`mtls ca export`) and a truststore holding the
 * CA's root (`keytool -importcert`), whose key material is read again when the keystore
 * file changes (renewal), and the SPIFFE ID (URI SAN) of a peer.
 *
 * JDK 17, javax.net.ssl only.
 */
import java.io.IOException;
import java.io.InputStream;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.Principal;
import java.security.PrivateKey;
import java.security.cert.CertificateParsingException;
import java.security.cert.X509Certificate;
import java.util.Collection;
import java.util.List;

import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509ExtendedKeyManager;

public final class MtlsTls {
	private MtlsTls() {
	}

	static KeyStore load(Path file, char[] password) throws IOException, GeneralSecurityException {
		KeyStore ks = KeyStore.getInstance("PKCS12");
		try (InputStream in = Files.newInputStream(file)) {
			ks.load(in, password);
		}
		return ks;
	}

	static X509ExtendedKeyManager keyManager(Path keystore, char[] password)
			throws IOException, GeneralSecurityException {
		KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
		kmf.init(load(keystore, password), password);
		for (KeyManager km : kmf.getKeyManagers())
			if (km instanceof X509ExtendedKeyManager)
				return (X509ExtendedKeyManager) km;
		throw new GeneralSecurityException("no X.509 key manager for " + keystore);
	}

	/*
	 * A key manager that reads the keystore again when its file changed (the agent's --exec
	 * hook wrote a new one after a renewal): each new handshake then uses the new
	 * certificate, connections already open keep theirs. A file that cannot be read (half
	 * written, wrong password) keeps the previous key material.
	 */
	static final class Reloading extends X509ExtendedKeyManager {
		private final Path file;
		private final char[] password;
		private volatile X509ExtendedKeyManager current;
		private volatile FileTime stamp;

		Reloading(Path file, char[] password) throws IOException, GeneralSecurityException {
			this.file = file;
			this.password = password;
			this.stamp = Files.getLastModifiedTime(file);
			this.current = keyManager(file, password);
		}

		private X509ExtendedKeyManager km() {
			try {
				FileTime t = Files.getLastModifiedTime(file);
				if (!t.equals(stamp)) {
					synchronized (this) {
						if (!t.equals(stamp)) {
							current = keyManager(file, password);
							stamp = t;
							System.err.println("keystore reloaded: " + file);
						}
					}
				}
			} catch (IOException | GeneralSecurityException e) {
				System.err.println("keystore not reloaded (the previous one is kept): " + e.getMessage());
			}
			return current;
		}

		@Override
		public String[] getClientAliases(String keyType, Principal[] issuers) {
			return km().getClientAliases(keyType, issuers);
		}

		@Override
		public String chooseClientAlias(String[] keyType, Principal[] issuers, Socket socket) {
			return km().chooseClientAlias(keyType, issuers, socket);
		}

		@Override
		public String chooseEngineClientAlias(String[] keyType, Principal[] issuers, SSLEngine engine) {
			return km().chooseEngineClientAlias(keyType, issuers, engine);
		}

		@Override
		public String[] getServerAliases(String keyType, Principal[] issuers) {
			return km().getServerAliases(keyType, issuers);
		}

		@Override
		public String chooseServerAlias(String keyType, Principal[] issuers, Socket socket) {
			return km().chooseServerAlias(keyType, issuers, socket);
		}

		@Override
		public String chooseEngineServerAlias(String keyType, Principal[] issuers, SSLEngine engine) {
			return km().chooseEngineServerAlias(keyType, issuers, engine);
		}

		@Override
		public X509Certificate[] getCertificateChain(String alias) {
			return current.getCertificateChain(alias);
		}

		@Override
		public PrivateKey getPrivateKey(String alias) {
			return current.getPrivateKey(alias);
		}
	}

	/* TLS 1.3 (what mtls speaks), our key material, trust in the truststore's root only. */
	static SSLContext context(Path keystore, char[] keyPassword, Path truststore, char[] trustPassword)
			throws IOException, GeneralSecurityException {
		TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
		tmf.init(load(truststore, trustPassword));
		SSLContext ctx = SSLContext.getInstance("TLSv1.3");
		ctx.init(new KeyManager[] {new Reloading(keystore, keyPassword)}, tmf.getTrustManagers(), null);
		return ctx;
	}

	/* The URI subjectAltNames of a certificate (a SPIFFE ID: spiffe://trust-domain/path). */
	static List<String> uris(X509Certificate cert) throws CertificateParsingException {
		Collection<List<?>> sans = cert.getSubjectAlternativeNames();
		if (sans == null)
			return List.of();
		return sans.stream().filter(s -> (Integer) s.get(0) == 6).map(s -> (String) s.get(1)).toList();
	}

	static char[] password(String env) {
		String v = System.getenv(env);
		if (v == null) {
			System.err.println("set " + env + " to the store's password");
			System.exit(2);
		}
		return v.toCharArray();
	}
}
