package io.fleetstream.sql;

import java.util.Collections;
import java.util.Set;
import java.util.WeakHashMap;
import java.util.regex.Pattern;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;

import scala.Function1;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * fleetstream's SQL endpoint is read-only: a Spark session extension (spark.sql.extensions) whose
 * check rule refuses, after analysis, every command that is not a question (SHOW, DESCRIBE,
 * EXPLAIN, SET, USE). Queries (SELECT, WITH, VALUES) are not commands and pass.
 *
 * Sessions the server itself uses to register the lake's tables are trusted ({@link #trust}).
 */
public final class ReadOnly extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {
  private static final Set<SparkSession> TRUSTED = Collections.synchronizedSet(
      Collections.newSetFromMap(new WeakHashMap<>()));

  /** Commands a reader may run: they read the catalog or the session's settings. */
  static final Pattern ALLOWED = Pattern.compile(
      "(Show|Describe)\\w*|ExplainCommand|SetCommand|ResetCommand|SetCatalogAndNamespace"
          + "|SetCatalogCommand|SetNamespaceCommand|CacheTableCommand|ClearCacheCommand");

  /** Let {@code session} run every command (the server's own registration of the tables). */
  public static void trust(SparkSession session) {
    TRUSTED.add(session);
  }

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    extensions.injectCheckRule(new AbstractFunction1<SparkSession, Function1<LogicalPlan, BoxedUnit>>() {
      @Override
      public Function1<LogicalPlan, BoxedUnit> apply(SparkSession session) {
        return new Check(session);
      }
    });
    return BoxedUnit.UNIT;
  }

  private static final class Check extends AbstractFunction1<LogicalPlan, BoxedUnit> {
    private final SparkSession session;

    Check(SparkSession session) {
      this.session = session;
    }

    @Override
    public BoxedUnit apply(LogicalPlan plan) {
      if (plan instanceof Command && !TRUSTED.contains(session)) {
        String name = plan.getClass().getSimpleName();
        if (!ALLOWED.matcher(name).matches()) {
          throw new SecurityException("fleetstream's SQL endpoint is read-only: " + name
              + " is refused (questions only: SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)");
        }
      }
      return BoxedUnit.UNIT;
    }
  }
}
