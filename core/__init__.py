"""The ground floor every Trainyard process shares: settings and the words for job states.

Imports nothing of ours; api/, worker/, db/ and models/ may import it, and it is the only
package of ours they share with the command-line package (trainyard/).
"""
