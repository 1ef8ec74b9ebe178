package io.fleetstream.sql;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;

import javax.security.sasl.AuthenticationException;

import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/**
 * The SQL endpoint's password check (hive.server2.authentication=CUSTOM): one user and password,
 * given to the server's JVM in the environment (FLEETSTREAM_SQL_AUTH_USER, FLEETSTREAM_SQL_AUTH_PASSWORD),
 * compared in constant time.
 */
public final class PasswordAuth implements PasswdAuthenticationProvider {
  @Override
  public void Authenticate(String user, String password) throws AuthenticationException {
    String expectedUser = System.getenv("FLEETSTREAM_SQL_AUTH_USER");
    String expectedPassword = System.getenv("FLEETSTREAM_SQL_AUTH_PASSWORD");
    if (expectedUser == null || expectedPassword == null || expectedPassword.isEmpty()) {
      throw new AuthenticationException("fleetstream SQL endpoint: no password is configured on the server");
    }
    boolean userOk = MessageDigest.isEqual(bytes(user), bytes(expectedUser));
    boolean passwordOk = MessageDigest.isEqual(bytes(password), bytes(expectedPassword));
    if (!(userOk && passwordOk)) {
      throw new AuthenticationException("fleetstream SQL endpoint: wrong user or password");
    }
  }

  private static byte[] bytes(String s) {
    return (s == null ? "" : s).getBytes(StandardCharsets.UTF_8);
  }
}
