# neural-reg: the lab's per-role accounts, created once, when the MySQL container initialises an empty data
# directory (the official image sources every *.sh in /docker-entrypoint-initdb.d, as root of the new server).
#
# From the environment (docker-compose.yml passes them; passwords come from your secret store, never this file):
#   NEURALREG_PREFIX    the schema prefix (default lab): the accounts' rights are on <prefix>_recording ... only
#   ADMIN_USER / ADMIN_PASS       admin: everything on the prefix's schemas, and may grant it (`neural-reg db setup`)
#   WORKER_USER / WORKER_PASS     worker: reads; writes the computed tables once `neural-reg db setup` granted them
#   ANALYST_USER / ANALYST_PASS   analyst: reads everything, writes nothing
# An account whose password is not set is not created. The same rights as `neural-reg db add-user` gives
# (neural_reg/accounts.py); a worker's table-level writes need the tables, so the compose `setup` service grants
# them after declaring the schemas (`neural-reg db setup`, then `neural-reg db grant WORKER --role worker`).

neuralreg_schemas="recording oracle predictor target classifier robustness"  # schemas.SCHEMA_NAMES

neuralreg_sql_string() {  # a quoted SQL string literal ('...', with \ and ' escaped)
	local s=${1//\\/\\\\}
	s=${s//\'/\\\'}
	printf "'%s'" "$s"
}

neuralreg_fail() {
	echo "neural-reg accounts: $*" >&2
	exit 1
}

neuralreg_accounts() {
	local prefix=${NEURALREG_PREFIX:-lab} sql="" role user pass schema privileges
	[[ $prefix =~ ^[a-z][a-z0-9_]{0,39}$ ]] || neuralreg_fail "NEURALREG_PREFIX '$prefix' is not valid. Fix: lowercase letters, digits and '_', starting with a letter, at most 40 characters."
	for role in admin worker analyst; do
		case $role in
			admin) user=${ADMIN_USER:-admin}; pass=${ADMIN_PASS:-}; privileges="ALL PRIVILEGES" ;;
			worker) user=${WORKER_USER:-worker}; pass=${WORKER_PASS:-}; privileges="SELECT" ;;
			analyst) user=${ANALYST_USER:-analyst}; pass=${ANALYST_PASS:-}; privileges="SELECT" ;;
		esac
		if [ -z "$pass" ]; then
			echo "neural-reg accounts: no ${role^^}_PASS: no $role account"
			continue
		fi
		[[ $user =~ ^[A-Za-z][A-Za-z0-9_.-]{0,31}$ ]] || neuralreg_fail "${role^^}_USER '$user' is not valid. Fix: letters, digits, '_', '.', '-', starting with a letter, at most 32 characters."
		sql+="CREATE USER IF NOT EXISTS '$user'@'%' IDENTIFIED BY $(neuralreg_sql_string "$pass");"$'\n'
		for schema in $neuralreg_schemas; do
			# '_' is a wildcard in a database-level grant: escaped, so lab_x never matches labx_x
			sql+="GRANT $privileges ON \`${prefix//_/\\_}\\_$schema\`.* TO '$user'@'%'"
			[ "$role" = admin ] && sql+=" WITH GRANT OPTION"
			sql+=";"$'\n'
		done
		echo "neural-reg accounts: $role account '$user' on the schemas of prefix '$prefix'"
	done
	[ -n "$sql" ] || return 0
	if declare -F docker_process_sql >/dev/null; then
		docker_process_sql --database=mysql <<<"$sql"
	else  # outside the image's entrypoint: root over the socket, the password in the environment, not in ps
		MYSQL_PWD=$MYSQL_ROOT_PASSWORD mysql --protocol=socket -uroot mysql <<<"$sql"
	fi
}

neuralreg_accounts
