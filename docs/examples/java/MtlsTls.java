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
	 * written, wrong password) keeps the previous key material. The aliases it hands out
	 * carry the keystore's generation ("3:java"), so that a handshake that chose an alias
	 * just before a reload still gets the chain and the key of one keystore, never a chain
	 * of the new one with a key of the old.
	 */
	static final class Reloading extends X509ExtendedKeyManager {
		private record Generation(int n, X509ExtendedKeyManager km, FileTime stamp) {
		}

		private final Path file;
		private final char[] password;
		private volatile Generation current, previous;

		Reloading(Path file, char[] password) throws IOException, GeneralSecurityException {
			this.file = file;
			this.password = password;
			FileTime t = Files.getLastModifiedTime(file);
			this.current = new Generation(1, keyManager(file, password), t);
			this.previous = current;
		}

		private Generation gen() {
			try {
				FileTime t = Files.getLastModifiedTime(file);
				if (!t.equals(current.stamp())) {
					synchronized (this) {
						Generation g = current;
						if (!t.equals(g.stamp())) {
							Generation next = new Generation(g.n() + 1, keyManager(file, password), t);
							previous = g;
							current = next;
							System.err.println("keystore reloaded: " + file);
						}
					}
				}
			} catch (IOException | GeneralSecurityException e) {
				System.err.println("keystore not reloaded (the previous one is kept): " + e.getMessage());
			}
			return current;
		}

		private static String tag(Generation g, String alias) {
			return alias == null ? null : g.n() + ":" + alias;
		}

		private static String[] tag(Generation g, String[] aliases) {
			if (aliases == null)
				return null;
			String[] out = new String[aliases.length];
			for (int i = 0; i < aliases.length; i++)
				out[i] = tag(g, aliases[i]);
			return out;
		}

		/* The generation an alias came from (the current or the one before), or null. */
		private Generation of(String alias) {
			int colon = alias == null ? -1 : alias.indexOf(':');
			if (colon < 0)
				return null;
			String n = alias.substring(0, colon);
			for (Generation g : new Generation[] {current, previous})
				if (String.valueOf(g.n()).equals(n))
					return g;
			return null;
		}

		@Override
		public String[] getClientAliases(String keyType, Principal[] issuers) {
			Generation g = gen();
			return tag(g, g.km().getClientAliases(keyType, issuers));
		}

		@Override
		public String chooseClientAlias(String[] keyType, Principal[] issuers, Socket socket) {
			Generation g = gen();
			return tag(g, g.km().chooseClientAlias(keyType, issuers, socket));
		}

		@Override
		public String chooseEngineClientAlias(String[] keyType, Principal[] issuers, SSLEngine engine) {
			Generation g = gen();
			return tag(g, g.km().chooseEngineClientAlias(keyType, issuers, engine));
		}

		@Override
		public String[] getServerAliases(String keyType, Principal[] issuers) {
			Generation g = gen();
			return tag(g, g.km().getServerAliases(keyType, issuers));
		}

		@Override
		public String chooseServerAlias(String keyType, Principal[] issuers, Socket socket) {
			Generation g = gen();
			return tag(g, g.km().chooseServerAlias(keyType, issuers, socket));
		}

		@Override
		public String chooseEngineServerAlias(String keyType, Principal[] issuers, SSLEngine engine) {
			Generation g = gen();
			return tag(g, g.km().chooseEngineServerAlias(keyType, issuers, engine));
		}

		@Override
		public X509Certificate[] getCertificateChain(String alias) {
			Generation g = of(alias);
			return g == null ? null : g.km().getCertificateChain(alias.substring(alias.indexOf(':') + 1));
		}

		@Override
		public PrivateKey getPrivateKey(String alias) {
			Generation g = of(alias);
			return g == null ? null : g.km().getPrivateKey(alias.substring(alias.indexOf(':') + 1));
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
